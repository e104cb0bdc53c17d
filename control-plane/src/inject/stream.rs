//! A YAML stream cut into its documents at `---` lines, so a document the
//! injector leaves alone is written back byte for byte, comments and all,
//! and only a rewritten one goes through the serializer.
//!
//! YAML forbids a document marker at the start of a line inside any
//! scalar, so cutting on lines is exact.

use super::node::Node;

/// One document of a stream, as written.
#[derive(Debug)]
pub struct Document<'a> {
    /// The `---` line that opened it (with its line end), if any.
    pub marker: &'a str,
    /// The lines after the marker.
    pub body: &'a str,
}

impl<'a> Document<'a> {
    /// The text to parse: anything after `---` on the marker line, then
    /// the body.
    pub fn source(&self) -> String {
        let inline = self.marker.get(3..).unwrap_or("");
        format!("{inline}{}", self.body)
    }

    /// True when the document holds only blank lines and comments.
    pub fn is_blank(&self) -> bool {
        self.source().lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#')
        })
    }

    /// How many lines of the stream it takes, its marker included.
    pub fn line_count(&self) -> usize {
        let text = [self.marker, self.body];
        text.iter().map(|t| t.split_inclusive('\n').count()).sum()
    }

    /// Writes the document unchanged.
    pub fn write_original(&self, out: &mut String) {
        out.push_str(self.marker);
        out.push_str(self.body);
    }

    /// Writes a rewritten tree in place of the document, after the
    /// comment lines that opened it (the serializer keeps no comments).
    pub fn write_tree(&self, tree: &Node, out: &mut String) -> Result<(), String> {
        let yaml = to_yaml(tree)?;
        if !self.marker.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(self.leading_comments());
        out.push_str(&yaml);
        Ok(())
    }

    /// The comment and blank lines before the first content line; none
    /// when the marker line carries content.
    fn leading_comments(&self) -> &'a str {
        let inline = self.marker.get(3..).unwrap_or("").trim();
        if !inline.is_empty() && !inline.starts_with('#') {
            return "";
        }
        let mut end = 0;
        for line in self.body.split_inclusive('\n') {
            let t = line.trim();
            if !(t.is_empty() || t.starts_with('#')) {
                break;
            }
            end += line.len();
        }
        &self.body[..end]
    }
}

/// Cuts a stream into documents. The first has an empty marker unless
/// the stream opens with `---`.
pub fn split(text: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut marker = "";
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if is_marker(line) {
            if offset > 0 || !marker.is_empty() {
                docs.push(Document {
                    marker,
                    body: &text[start..offset],
                });
            }
            marker = line;
            start = offset + line.len();
        }
        offset += line.len();
    }
    docs.push(Document {
        marker,
        body: &text[start..],
    });
    docs
}

fn is_marker(line: &str) -> bool {
    let line = line.trim_end_matches(['\n', '\r']);
    line == "---" || line.starts_with("--- ") || line.starts_with("---\t")
}

/// Parses one document's text.
pub fn parse(source: &str) -> Result<Node, String> {
    serde_saphyr::from_str::<Node>(source).map_err(|e| e.to_string())
}

/// Writes a tree as block YAML: two-space indent, sequences flush with
/// their key, multi-line strings as literal blocks, long lines left long.
pub fn to_yaml(tree: &Node) -> Result<String, String> {
    let mut options = serde_saphyr::SerializerOptions::default();
    options.folded_wrap_chars = usize::MAX;
    serde_saphyr::to_string_with_options(tree, options).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_marker_lines_only() {
        let text = "a: 1\n---\nb: |\n  ---x\n--- # c\nc: 3\n";
        let docs = split(text);
        let bodies: Vec<&str> = docs.iter().map(|d| d.body).collect();
        assert_eq!(bodies, ["a: 1\n", "b: |\n  ---x\n", "c: 3\n"]);
        assert_eq!(docs[2].marker, "--- # c\n");
        let mut out = String::new();
        docs.iter().for_each(|d| d.write_original(&mut out));
        assert_eq!(out, text);
    }

    #[test]
    fn a_rewritten_document_keeps_its_opening_comments() {
        let docs = split("a: 1\n--- # two\n# about b\n\nb: 2 # gone\n");
        let mut out = String::new();
        docs[1]
            .write_tree(&parse("b: 3").unwrap(), &mut out)
            .unwrap();
        assert_eq!(out, "---\n# about b\n\nb: 3\n");
    }

    #[test]
    fn a_leading_marker_opens_the_first_document() {
        let docs = split("---\na: 1\n");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].marker, "---\n");
    }

    #[test]
    fn keys_keep_their_order_through_a_round_trip() {
        let tree = parse("z: 1\na: 'true'\nm: {y: [1, 2], b: null}\n").unwrap();
        let text = to_yaml(&tree).unwrap();
        assert_eq!(parse(&text).unwrap(), tree);
        assert!(text.find("z:").unwrap() < text.find("a:").unwrap());
        assert_eq!(to_yaml(&parse(&text).unwrap()).unwrap(), text);
    }

    #[test]
    fn scalars_keep_their_types_through_a_round_trip() {
        let source = "f: 1.0\ng: 0.5\nn: -3\nbig: 18446744073709551615\n\
            s: ['0755', '1e3', 'yes', 'on', '~', 'null', '', ' x', 'a: b', '#c', '*']\n\
            t: [true, ~, null]\nm: |\n  two\n  lines\n";
        let tree = parse(source).unwrap();
        let text = to_yaml(&tree).unwrap();
        assert_eq!(parse(&text).unwrap(), tree, "{text}");
    }
}
