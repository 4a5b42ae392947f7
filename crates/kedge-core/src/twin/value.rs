//! Twin values checked against the DeviceModel property type. Beyond KubeEdge: any UTF-8 string
//! up to 64 KiB (spaces included), `double` and base64 `bytes` accepted.

use super::{MAX_VALUE_LEN, TwinError};

/// Property types of a v1alpha2 DeviceModel (`spec.properties[].type.<kind>`), plus KubeEdge's
/// twin metadata spellings.
pub fn check(property: &str, kind: &str, value: &str) -> Result<(), TwinError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(TwinError::TooLarge(format!(
            "the value of {property} is {} bytes; the limit is {MAX_VALUE_LEN}",
            value.len()
        )));
    }
    let bad = |what: &str| {
        Err(TwinError::BadRequest(format!(
            "{property} is of type {kind}: {value:?} is not {what}"
        )))
    };
    match kind {
        "" | "string" => Ok(()),
        "int" | "integer" => value
            .trim()
            .parse::<i64>()
            .map(|_| ())
            .or_else(|_| bad("an integer")),
        "float" | "double" => match value.trim().parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(()),
            _ => bad("a finite number"),
        },
        "boolean" | "bool" => match value {
            "true" | "false" => Ok(()),
            _ => bad("true or false"),
        },
        "bytes" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(value)
                .map(|_| ())
                .or_else(|_| bad("base64"))
        }
        other => Err(TwinError::BadRequest(format!(
            "{property} has an unknown type {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_against_their_type() {
        for (kind, ok, bad) in [
            ("string", "a value with spaces, ü", None),
            ("int", "42", Some("4.2")),
            ("integer", "-7", Some("seven")),
            ("float", "21.5", Some("NaN")),
            ("double", "1e3", Some("")),
            ("boolean", "true", Some("yes")),
            ("bytes", "aGVsbG8=", Some("not base64!")),
        ] {
            assert_eq!(check("p", kind, ok), Ok(()), "{kind} {ok}");
            if let Some(bad) = bad {
                let e = check("p", kind, bad).expect_err("refused");
                assert_eq!(e.code(), 400);
                assert!(e.to_string().contains(kind), "{e}");
            }
        }
    }

    #[test]
    fn huge_values_are_413_and_unknown_types_400() {
        let big = "x".repeat(MAX_VALUE_LEN + 1);
        assert_eq!(check("p", "string", &big).map_err(|e| e.code()), Err(413));
        assert_eq!(check("p", "string", &big[1..]), Ok(()));
        assert_eq!(check("p", "decimal", "1").map_err(|e| e.code()), Err(400));
    }
}
