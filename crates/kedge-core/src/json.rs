//! Reading outside JSON (objects from the API or the edge) without panicking.

use serde_json::Value;

/// The string at JSON pointer `ptr` in `v`, or `""` when absent or not a string.
pub fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_non_string_value_reads_empty() {
        let v = serde_json::json!({"metadata": {"name": "a", "generation": 1}});
        assert_eq!(str_at(&v, "/metadata/name"), "a");
        assert_eq!(str_at(&v, "/metadata/generation"), "");
        assert_eq!(str_at(&v, "/spec/x"), "");
    }
}
