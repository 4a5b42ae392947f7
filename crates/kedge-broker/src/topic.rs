//! MQTT 3.1.1 topic names and filters (spec §4.7): `/`-separated levels, `+` one level, `#` the
//! rest; topics starting with `$` are matched only by filters that start with the same literal
//! level (so `#` never sees `$hw/...`, while `$hw/events/device/+/+/twin/+` does).

/// The longest topic name or filter accepted (the spec's limit is 65,535 bytes).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// A topic a client may publish to: non-empty, no wildcards, no NUL.
pub fn valid_name(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= MAX_TOPIC_LEN && !topic.contains(['+', '#', '\0'])
}

/// A filter a client may subscribe to: `+` fills a whole level; `#` only as the whole last level.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > MAX_TOPIC_LEN || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, l)| match *l {
        "+" => true,
        "#" => i == last,
        l => !l.contains(['+', '#']),
    })
}

/// True when `filter` has no wildcard (it matches exactly one topic: itself).
pub fn is_exact(filter: &str) -> bool {
    !filter.contains(['+', '#'])
}

/// Whether the valid `topic` matches the valid `filter`.
pub fn matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match (f, t.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (f, Some(level)) if f == level => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wildcards_match_as_the_spec_says() {
        for (topic, filter, want) in [
            ("sport/tennis/player1", "sport/tennis/player1", true),
            ("sport/tennis/player1", "sport/tennis/+", true),
            ("sport/tennis/player1", "sport/#", true),
            ("sport", "sport/#", true),
            ("sport/tennis", "sport/+", true),
            ("sport", "sport/+", false),
            ("sport/", "sport/+", true),
            ("/finance", "+/+", true),
            ("/finance", "/+", true),
            ("/finance", "+", false),
            ("a/b/c", "a/+", false),
            ("a/b", "a/b/c", false),
            ("test", "#", true),
            ("default/test", "default/test", true),
        ] {
            assert_eq!(matches(topic, filter), want, "{topic} ~ {filter}");
        }
    }

    #[test]
    fn dollar_topics_need_a_literal_first_level() {
        let twin = "$hw/events/device/default/counter/twin/update";
        assert!(matches(twin, "$hw/events/device/+/+/twin/+"));
        assert!(matches(twin, "$hw/#"));
        assert!(matches(twin, twin));
        assert!(!matches(twin, "#"));
        assert!(!matches(twin, "+/events/device/+/+/twin/+"));
        assert!(!matches("$SYS/x", "+/x"));
    }

    #[test]
    fn filters_and_names_are_validated() {
        for f in [
            "#",
            "+",
            "a/+/c",
            "a/#",
            "+/+",
            "$hw/events/device/+/+/twin/+",
            "/",
        ] {
            assert!(valid_filter(f), "{f}");
        }
        for f in ["", "a/#/c", "a#", "a/b+", "++", "a/\0"] {
            assert!(!valid_filter(f), "{f:?}");
        }
        assert!(valid_name("a/b c/ü"));
        for t in ["", "a/+", "a/#", "a\0"] {
            assert!(!valid_name(t), "{t:?}");
        }
    }

    proptest! {
        #[test]
        fn a_topic_matches_itself_and_the_all_filter(levels in proptest::collection::vec("[a-z0-9 ]{0,4}", 1..6)) {
            let topic = levels.join("/");
            prop_assume!(valid_name(&topic));
            prop_assert!(matches(&topic, &topic));
            prop_assert!(matches(&topic, "#"));
            let plus = vec!["+"; levels.len()].join("/");
            prop_assert!(matches(&topic, &plus));
        }

        #[test]
        fn matching_never_panics(topic in "[a-z/+#$]{0,12}", filter in "[a-z/+#$]{0,12}") {
            let _ = matches(&topic, &filter);
            let _ = valid_filter(&filter);
        }
    }
}
