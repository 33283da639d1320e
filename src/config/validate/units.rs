//! Sizes and rates with units, as operators write them: `"2 GB"`, `"500 MiB"`,
//! `"2 Mbit/s"`, `"256 kbit/s"`, `"250 kB/s"`. Decimal prefixes are powers of 1000 (as
//! telecom bills and link speeds count), `Ki`/`Mi`/`Gi`/`Ti` powers of 1024; a bare
//! integer is bytes (or bytes per second).

/// `s` as bytes.
pub(super) fn parse_size(s: &str) -> Result<u64, String> {
    let (n, unit) = split(s)?;
    let unit = unit.to_ascii_lowercase();
    let mult: f64 = match unit.as_str() {
        "" | "b" | "byte" | "bytes" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "`{s}`: unknown unit `{unit}`; use B, kB, MB, GB, TB (or KiB, MiB, GiB)"
            ));
        }
    };
    whole(n * mult, s)
}

/// `s` as bytes per second. Bits: `bit/s`, `kbit/s`, `Mbit/s`, `Gbit/s`, also `Mb/s` and
/// `Mbps`; bytes: `B/s`, `kB/s`, `MB/s`, `KiB/s`, `MiB/s`.
pub(super) fn parse_rate(s: &str) -> Result<u64, String> {
    // The case of `b`/`B` matters here: bits or bytes.
    let (n, unit) = split(s)?;
    let bad = || {
        format!("`{s}` is not a rate: write it like \"2 Mbit/s\", \"256 kbit/s\" or \"250 kB/s\"")
    };
    let (prefix, bits) = if let Some(p) = unit.strip_suffix("bit/s") {
        (p, true)
    } else if let Some(p) = unit.strip_suffix("bps") {
        (p, true)
    } else if let Some(p) = unit.strip_suffix("b/s") {
        (p, true)
    } else if let Some(p) = unit.strip_suffix("B/s") {
        (p, false)
    } else {
        return Err(bad());
    };
    let mult: f64 = match prefix.to_ascii_lowercase().as_str() {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "ki" if !bits => 1024.0,
        "mi" if !bits => 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    whole(if bits { n * mult / 8.0 } else { n * mult }, s)
}

/// The number and the unit as written (spaces dropped).
fn split(s: &str) -> Result<(f64, String), String> {
    let t = s.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(end);
    let n: f64 = num
        .replace('_', "")
        .parse()
        .map_err(|_| format!("`{s}` does not start with a number"))?;
    let unit: String = unit.chars().filter(|c| !c.is_whitespace()).collect();
    Ok((n, unit))
}

fn whole(v: f64, s: &str) -> Result<u64, String> {
    if !(v.is_finite() && (1.0..1.8e19).contains(&v)) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(v.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_rates_read_as_written() {
        assert_eq!(parse_size("2 GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("500 MiB"), Ok(500 * 1024 * 1024));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("2 GX").is_err());
        assert!(parse_size("GB").is_err());
        assert_eq!(parse_rate("2 Mbit/s"), Ok(250_000));
        assert_eq!(parse_rate("256 kbit/s"), Ok(32_000));
        assert_eq!(parse_rate("20 Mbit/s"), Ok(2_500_000));
        assert_eq!(parse_rate("250 kB/s"), Ok(250_000));
        assert_eq!(parse_rate("2 Mbps"), Ok(250_000));
        assert_eq!(parse_rate("2 Mb/s"), Ok(250_000));
        assert_eq!(parse_rate("2 MB/s"), Ok(2_000_000));
        assert_eq!(parse_rate("1 MiB/s"), Ok(1_048_576));
        assert!(parse_rate("2 Mbit").is_err());
        assert!(parse_rate("2 Xbit/s").is_err());
    }
}
