//! `dlock status`: who holds a key, read without taking it.

use dlock::{Error, LockExt};

use crate::{args::StatusArgs, exit};

/// Exit code when the key is free (held is 0).
const FREE: u8 = 1;

pub(crate) async fn status(args: StatusArgs) -> u8 {
    let url = match crate::args::shared_backend(args.url) {
        Ok(url) => url,
        Err(message) => {
            eprintln!("dlock: {message}");
            return exit::USAGE;
        }
    };
    let failed = |e: Error| {
        eprintln!("dlock: {e}");
        exit::of_error(&e)
    };
    let lock = match dlock::connect(&url).await {
        Ok(lock) => lock,
        Err(e) => return failed(e),
    };
    let holder = match lock.holder(&args.key).await {
        Ok(holder) => holder,
        Err(e) => return failed(e),
    };
    let key = &args.key;
    match (&holder, args.json) {
        (None, false) => println!("{key}: free"),
        (None, true) => println!("{{\"key\":{},\"held\":false}}", json_string(key)),
        (Some(h), false) => {
            let fence = h.fence.map_or("unknown".into(), |f| f.to_string());
            let left = h
                .expires_in
                .map_or("unknown".into(), |d| format!("{:.1} s", d.as_secs_f64()));
            let value = h.value.as_ref().map_or(String::new(), |v| {
                format!(", value {}", String::from_utf8_lossy(v))
            });
            println!(
                "{key}: held, fence {fence}, expires in {left}, holder {}{value}",
                h.id
            );
        }
        (Some(h), true) => {
            let fence = h.fence.map_or("null".into(), |f| f.to_string());
            let left = h
                .expires_in
                .map_or("null".into(), |d| d.as_millis().to_string());
            let value = h
                .value
                .as_ref()
                .map_or("null".into(), |v| json_string(&String::from_utf8_lossy(v)));
            println!(
                "{{\"key\":{},\"held\":true,\"fence\":{fence},\"expires_in_ms\":{left},\"holder\":{},\"value\":{value}}}",
                json_string(key),
                json_string(&h.id)
            );
        }
    }
    if holder.is_some() { 0 } else { FREE }
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::json_string;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(
            json_string("a\"b\\c\nd\u{1}é"),
            "\"a\\\"b\\\\c\\nd\\u0001é\""
        );
    }
}
