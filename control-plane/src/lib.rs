//! vakt-control: the control plane.
