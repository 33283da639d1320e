//! serde's and toml's messages in plain words: an operator reads "must be a whole number,
//! like 30 (got the string "30")", never `invalid type: string "30", expected u64`. No Rust
//! type name (`u64`, `f64`, `i128`, "sequence", "map", `struct RawCamera`) reaches a
//! message; what is not recognised keeps serde's text with those names translated.

/// What a Rust type name in "expected …" means to an operator.
fn expected(what: &str) -> String {
    let w = what.trim().trim_end_matches('.');
    match w {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => {
            "a whole number, 0 or more (like 30)".to_string()
        }
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number (like 30)".to_string(),
        "f32" | "f64" => "a number, like 2 or 0.5".to_string(),
        "a boolean" | "bool" => "true or false".to_string(),
        "a string" | "a borrowed string" | "string" => "text in quotes, like \"main\"".to_string(),
        "a sequence" => "a list, like [\"a\", \"b\"]".to_string(),
        "a map" => "a table".to_string(),
        "a character" | "char" => "a single character in quotes".to_string(),
        _ if w.starts_with("struct ") || w.starts_with("a map") => "a table".to_string(),
        _ if w.starts_with("internally tagged enum") || w.starts_with("enum ") => {
            "a table with a `type` key".to_string()
        }
        _ => translate_names(w),
    }
}

/// What serde says it got ("string \"2\"", "integer `-1`", "floating point `1.5`", …), in
/// plain words.
fn got(what: &str) -> String {
    let w = what.trim();
    let tick = |s: &str| s.trim_matches('`').to_string();
    if let Some(v) = w.strip_prefix("string ") {
        format!("the string {v}")
    } else if let Some(v) = w.strip_prefix("integer ") {
        tick(v)
    } else if let Some(v) = w.strip_prefix("floating point ") {
        tick(v)
    } else if let Some(v) = w.strip_prefix("boolean ") {
        tick(v)
    } else if w == "sequence" {
        "a list".to_string()
    } else if w == "map" {
        "a table".to_string()
    } else {
        translate_names(w)
    }
}

/// Rust type names inside free text, replaced.
fn translate_names(s: &str) -> String {
    let mut out = String::new();
    for (i, word) in s.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let core = word.trim_matches(|c: char| !c.is_alphanumeric());
        let plain = match core {
            "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64"
            | "i128" | "isize" => Some("whole number"),
            "f32" | "f64" => Some("number"),
            "sequence" => Some("list"),
            "map" => Some("table"),
            _ => None,
        };
        match plain {
            Some(p) => out.push_str(&word.replace(core, p)),
            None => out.push_str(word),
        }
    }
    out
}

/// `message` (serde's or toml's) in plain words.
pub(super) fn plain(message: &str) -> String {
    let m = message.trim();
    // invalid type: string "2", expected f64
    // invalid value: integer `-1`, expected u64
    // A number TOML holds but no field can (buffered tagged tables say "as i128").
    if let Some(rest) = m
        .strip_prefix("invalid value: integer `")
        .or_else(|| m.strip_prefix("invalid type: integer `"))
        && let Some((n, tail)) = rest.split_once('`')
        && tail.starts_with(" as i128")
    {
        return format!("is too large a number (got {n})");
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = m.strip_prefix(prefix)
            && let Some((g, e)) = rest.rsplit_once(", expected ")
        {
            return format!("must be {} (got {})", expected(e), got(g));
        }
    }
    if let Some(rest) = m.strip_prefix("missing field `")
        && let Some((f, _)) = rest.split_once('`')
    {
        return format!("the key `{f}` is missing here");
    }
    if let Some(rest) = m.strip_prefix("unknown field `")
        && let Some((f, tail)) = rest.split_once('`')
    {
        let known = tail
            .trim_start_matches(", expected one of ")
            .trim_start_matches(", expected ")
            .replace('`', "");
        return if known.is_empty() || tail.contains("there are no fields") {
            format!("unknown key `{f}`: this table takes no keys")
        } else {
            format!("unknown key `{f}`; the keys here are: {known}")
        };
    }
    if let Some(rest) = m.strip_prefix("unknown variant `")
        && let Some((v, tail)) = rest.split_once('`')
    {
        let known = tail
            .trim_start_matches(", expected one of ")
            .trim_start_matches(", expected ")
            .replace('`', "\"");
        return format!("\"{v}\" is not one of: {known}");
    }
    if let Some(rest) = m.strip_prefix("invalid length ")
        && let Some((n, e)) = rest.split_once(", expected ")
    {
        return format!("must have {} (got {n} items)", translate_names(e));
    }
    translate_names(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_read_as_plain_words() {
        assert_eq!(
            plain("invalid type: string \"2\", expected f64"),
            "must be a number, like 2 or 0.5 (got the string \"2\")"
        );
        assert_eq!(
            plain("invalid value: integer `-1`, expected u64"),
            "must be a whole number, 0 or more (like 30) (got -1)"
        );
        assert_eq!(
            plain("invalid type: floating point `1.5`, expected u64"),
            "must be a whole number, 0 or more (like 30) (got 1.5)"
        );
        assert_eq!(
            plain("invalid type: string \"main\", expected a sequence"),
            "must be a list, like [\"a\", \"b\"] (got the string \"main\")"
        );
        assert_eq!(
            plain("invalid type: boolean `true`, expected i128"),
            "must be a whole number (like 30) (got true)"
        );
        assert_eq!(
            plain("missing field `name`"),
            "the key `name` is missing here"
        );
        assert_eq!(
            plain("invalid value: integer `99999999999999999999` as i128, expected any value"),
            "is too large a number (got 99999999999999999999)"
        );
        assert_eq!(
            plain("unknown variant `fast`, expected `grouped` or `per_frame`"),
            "\"fast\" is not one of: \"grouped\" or \"per_frame\""
        );
        for m in [
            "invalid type: map, expected u32",
            "invalid type: sequence, expected struct RawQueue",
            "invalid type: integer `3`, expected a string",
        ] {
            let p = plain(m);
            for name in ["u32", "u64", "f64", "i128", "sequence", "struct", "map"] {
                assert!(!p.split(' ').any(|w| w.contains(name)), "{m} → {p}");
            }
        }
    }
}
