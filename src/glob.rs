//! Globs with Go's `path/filepath.Match` syntax and semantics: `*`, `?`, `[...]` classes
//! (`^` negates, ranges), `\\` escapes; `*` and `?` never match `/`. The kubelet matches
//! registry host labels with it (URLsMatch), and the policy's namespace patterns and
//! registry patterns use the same syntax, so one implementation serves all of them.

/// A glob checked once (well-formed), matched many times.
#[derive(Debug, Clone)]
pub(crate) struct Glob {
    pattern: String,
}

impl Glob {
    /// Checks the pattern the way `filepath.Match` would report `ErrBadPattern`.
    pub(crate) fn compile(pattern: &str) -> Result<Self, String> {
        match filepath_match(pattern.as_bytes(), b"") {
            Ok(_) => Ok(Self {
                pattern: pattern.to_string(),
            }),
            Err(BadPattern(why)) => Err(why.to_string()),
        }
    }

    /// The pattern as written, for messages.
    pub(crate) fn as_str(&self) -> &str {
        &self.pattern
    }

    pub(crate) fn matches(&self, text: &str) -> bool {
        matches!(
            filepath_match(self.pattern.as_bytes(), text.as_bytes()),
            Ok(true)
        )
    }
}

/// A text the glob `pattern` matches: each `*` or `?` becomes `x`, a class its first
/// member (for a negated class, `x`). For `audit`'s coverage samples.
pub(crate) fn sample(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' => out.push('x'),
            '[' => {
                let mut first = None;
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                    if first.is_none() && d != '^' && d != '!' {
                        first = Some(d);
                    }
                }
                out.push(first.unwrap_or('x'));
            }
            c => out.push(c),
        }
    }
    out
}

/// `filepath.ErrBadPattern`.
/// Carries why, for the policy's messages.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadPattern(pub(crate) &'static str);

/// Go `path/filepath.Match` (Unix): `*`, `?`, `[...]` classes with `^` and ranges, `\`
/// escapes. Works on bytes and decodes runes where Go does.
pub(crate) fn filepath_match(pattern: &[u8], name: &[u8]) -> Result<bool, BadPattern> {
    let (mut pattern, mut name) = (pattern, name);
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            return Ok(!name.contains(&b'/'));
        }
        if let Some(t) = match_chunk(chunk, name)?
            && (t.is_empty() || !pattern.is_empty())
        {
            name = t;
            continue;
        }
        if star {
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                // The last chunk must consume the rest of the name.
                if let Some(t) = match_chunk(chunk, &name[i + 1..])?
                    && (t.is_empty() || !pattern.is_empty())
                {
                    name = t;
                    continue 'pattern;
                }
                i += 1;
            }
        }
        // Not a match; the rest of the pattern must still be well-formed.
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, b"")?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Leading stars, then the chunk up to the next star outside a class.
fn scan_chunk(pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let stars = pattern.iter().take_while(|&&c| c == b'*').count();
    let p = &pattern[stars..];
    let mut in_range = false;
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'\\' if i + 1 < p.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (stars > 0, &p[..i], &p[i..])
}

/// Matches one star-free chunk at the start of `s`: `Some(rest)` on a match. Keeps
/// scanning the chunk after a mismatch to report a malformed pattern.
fn match_chunk<'s>(chunk: &[u8], s: &'s [u8]) -> Result<Option<&'s [u8]>, BadPattern> {
    let (mut chunk, mut s) = (chunk, s);
    let mut failed = false;
    while let Some(&c) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match c {
            b'[' => {
                let mut r = 0;
                if !failed {
                    let (rune, n) = decode_rune(s);
                    r = rune;
                    s = &s[n..];
                }
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&b'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&b']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = get_escaped(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk.first() == Some(&b'-') {
                        let (h, rest) = get_escaped(&chunk[1..])?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == b'/' {
                        failed = true;
                    }
                    s = &s[decode_rune(s).1..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                if c == b'\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return Err(BadPattern("trailing '\\'"));
                    }
                }
                if !failed {
                    if chunk[0] != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

/// One (possibly `\`-escaped) rune of a class; a class item may not start with `-` or `]`
/// and may not end the pattern.
fn get_escaped(chunk: &[u8]) -> Result<(u32, &[u8]), BadPattern> {
    let mut chunk = chunk;
    match chunk.first() {
        None => return Err(BadPattern("unclosed '['")),
        Some(b'-') => return Err(BadPattern("unexpected '-' in a character class")),
        Some(b']') => return Err(BadPattern("unexpected ']' in a character class")),
        Some(b'\\') => {
            chunk = &chunk[1..];
            if chunk.is_empty() {
                return Err(BadPattern("trailing '\\'"));
            }
        }
        Some(_) => {}
    }
    let (r, n) = decode_rune(chunk);
    let rest = &chunk[n..];
    if r == u32::from(char::REPLACEMENT_CHARACTER) && n == 1 {
        return Err(BadPattern("invalid UTF-8 in a character class"));
    }
    if rest.is_empty() {
        return Err(BadPattern("unclosed '['"));
    }
    Ok((r, rest))
}

/// Go `utf8.DecodeRune`: (U+FFFD, 1) for an invalid or truncated sequence.
fn decode_rune(s: &[u8]) -> (u32, usize) {
    const ERROR: (u32, usize) = (0xFFFD, 1);
    let width = match s.first() {
        None => return (0xFFFD, 0),
        Some(0x00..=0x7F) => 1,
        Some(0xC2..=0xDF) => 2,
        Some(0xE0..=0xEF) => 3,
        Some(0xF0..=0xF4) => 4,
        Some(_) => return ERROR,
    };
    match s.get(..width).map(std::str::from_utf8) {
        Some(Ok(text)) => text.chars().next().map_or(ERROR, |c| (u32::from(c), width)),
        _ => ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filepath_match_like_go() {
        let m = |p: &str, n: &str| filepath_match(p.as_bytes(), n.as_bytes());
        assert_eq!(m("*", ""), Ok(true));
        assert_eq!(m("a*b*c", "axbyc"), Ok(true));
        assert_eq!(m("a*b", "ab"), Ok(true));
        assert_eq!(m("a*", "a/b"), Ok(false));
        assert_eq!(m("?", "é"), Ok(true));
        assert_eq!(m("[é]", "é"), Ok(true));
        assert_eq!(m("[a-c]x", "bx"), Ok(true));
        assert_eq!(m("[\\]]", "]"), Ok(true));
        assert_eq!(m("\\*", "*"), Ok(true));
        assert!(matches!(m("[", "a"), Err(BadPattern(_))));
        assert!(matches!(m("[]a]", "a"), Err(BadPattern(_))));
        assert!(matches!(m("a\\", "a"), Err(BadPattern(_))));
        assert!(matches!(m("x[", "a"), Err(BadPattern(_))));
        assert!(matches!(m("[a-", "a"), Err(BadPattern(_))));
        assert_eq!(m("*x", "abx"), Ok(true));
    }

    #[test]
    fn compiled_globs_match_like_filepath_match() {
        let g = |p: &str| Glob::compile(p).unwrap();
        assert!(g("team-*").matches("team-a"));
        assert!(!g("team-*").matches("team/a"));
        assert_eq!(Glob::compile("[").unwrap_err(), "unclosed '['");
        assert_eq!(Glob::compile("a\\").unwrap_err(), "trailing '\\'");
        assert_eq!(
            Glob::compile("[]").unwrap_err(),
            "unexpected ']' in a character class"
        );
        assert_eq!(sample("*.dkr.ecr.*"), "x.dkr.ecr.x");
        assert_eq!(sample("reg[0-9]"), "reg0");
    }
}
