//! Free text is hostile: these helpers make it safe to show in a message or a one-line comment.
//! Target-specific quoting lives in `render`; everything here is target-neutral.

/// Quotes a value for an error message: control characters, quotes and backslashes escaped
/// (a newline shows as `\n`), and long values cut so one bad field can't flood a terminal.
pub fn quote(s: &str) -> String {
    quote_max(s, 120)
}

/// `quote`, cut after `max_chars` characters: the start of a page that is not JSON says more
/// with a little more room.
pub fn quote_max(s: &str, max_chars: usize) -> String {
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        if i == max_chars {
            out.push_str("\"...");
            return out;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

/// Characters that could break a line, hide text or reorder it on screen (Trojan Source): a
/// reviewer must see in a diff what the firewall file says. Controls, line and paragraph
/// separators, bidi marks, embeddings, overrides and isolates (U+061C, U+200E/F, U+202A-202E,
/// U+2066-2069), zero-width and invisible characters (U+200B-200D, U+2060-2064, U+FEFF, U+180E,
/// U+00AD, U+034F, Hangul fillers), deprecated format characters (U+206A-206F), interlinear
/// annotations (U+FFF9-FFFB), tag characters (U+E0000-E007F) and the noncharacters U+FFFE/FFFF.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{FFFE}'
                | '\u{FFFF}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

/// One line of plain text: every unsafe character becomes a space, runs of white space fold
/// into one, and the ends are trimmed.
pub fn sanitize_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    // Whether a space is owed before the next character: none at the start or the end.
    let mut gap = false;
    for c in s.chars() {
        // An ASCII character is a space here when it is one or a control: the only ASCII
        // white space that is not a control is ' ', and every control is unsafe.
        let space = if c.is_ascii() {
            c == ' ' || c.is_ascii_control()
        } else {
            is_unsafe(c) || c.is_whitespace()
        };
        if space {
            gap = !out.is_empty();
        } else {
            if gap {
                out.push(' ');
                gap = false;
            }
            out.push(c);
        }
    }
    out
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_controls_and_quotes() {
        assert_eq!(quote("a\nb\"c\\"), r#""a\nb\"c\\""#);
        assert_eq!(quote("企业"), "\"企业\"");
        assert!(quote(&"x".repeat(500)).ends_with("\"..."));
    }

    #[test]
    fn sanitize_folds_every_line_break() {
        assert_eq!(
            sanitize_line(" a\r\n\tb\u{2028}c\u{202E}d\u{0}  "),
            "a b c d"
        );
        assert_eq!(sanitize_line("企业微信;登录"), "企业微信;登录");
    }

    #[test]
    fn invisible_and_bidi_characters_never_reach_a_comment() {
        let hidden = [
            '\u{061C}',
            '\u{200E}',
            '\u{200F}',
            '\u{202A}',
            '\u{202B}',
            '\u{202C}',
            '\u{202D}',
            '\u{202E}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{2060}',
            '\u{2061}',
            '\u{2062}',
            '\u{2063}',
            '\u{2064}',
            '\u{E0001}',
            '\u{E0041}',
            '\u{E007F}',
            '\u{00AD}',
            '\u{FFFE}',
            '\u{FFFF}',
            '\u{180E}',
            '\u{FFF9}',
        ];
        for c in hidden {
            let line = sanitize_line(&format!("a{c}b"));
            assert_eq!(line, "a b", "U+{:04X} passed", u32::from(c));
        }
        // Visible text, CJK and emoji included, is kept.
        assert_eq!(sanitize_line("企业微信 😀 é"), "企业微信 😀 é");
    }

    /// The line is what replacing each unsafe character with a space, folding white space and
    /// trimming gives, for every pair of ASCII characters and for the white space and unsafe
    /// characters beyond ASCII.
    #[test]
    fn sanitize_is_replace_fold_and_trim() {
        let fold = |s: &str| -> String {
            let spaced: String = s
                .chars()
                .map(|c| if is_unsafe(c) { ' ' } else { c })
                .collect();
            spaced.split_whitespace().collect::<Vec<_>>().join(" ")
        };
        let mut chars: Vec<char> = (0..128u8).map(char::from).collect();
        chars.extend([
            '\u{85}',
            '\u{A0}',
            '\u{AD}',
            '\u{1680}',
            '\u{2000}',
            '\u{200B}',
            '\u{2028}',
            '\u{202F}',
            '\u{205F}',
            '\u{3000}',
            '\u{FEFF}',
            '\u{E0041}',
            '企',
            'é',
        ]);
        for &a in &chars {
            for &b in &chars {
                for s in [format!("{a}{b}"), format!(" {a}x{b}{b}y ")] {
                    assert_eq!(sanitize_line(&s), fold(&s), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn truncation_never_splits_a_character() {
        let s = "企".repeat(100); // 3 bytes each
        assert_eq!(truncate_bytes(&s, 128).len(), 126);
        assert_eq!(truncate_bytes(&s, 129).len(), 129);
        assert_eq!(truncate_bytes("abc", 10), "abc");
        assert_eq!(truncate_bytes("abc", 0), "");
    }
}
