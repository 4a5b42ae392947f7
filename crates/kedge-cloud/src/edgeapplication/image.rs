//! Image references as `[registry/]repository[:tag|@digest]`, and the EdgeApplication image
//! overriders that change one component (pure).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub registry: String,
    pub repository: String,
    /// `:tag` or `@digest`, with its separator; empty when none.
    pub tag: String,
}

impl Image {
    pub fn parse(s: &str) -> Image {
        let (registry, rest) = match s.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest)
            }
            _ => (String::new(), s),
        };
        let cut = rest
            .find('@')
            .or_else(|| rest.rfind(':').filter(|i| !rest[*i..].contains('/')));
        let (repository, tag) = match cut {
            Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
            None => (rest.to_string(), String::new()),
        };
        Image {
            registry,
            repository,
            tag,
        }
    }

    /// Applies one overrider: `component` Registry, Repository or Tag; `operator` add (appended
    /// to the registry or repository, the tag set when there is none), remove, replace.
    pub fn apply(&mut self, component: &str, operator: &str, value: &str) {
        let tag_value = || {
            if value.starts_with('@') || value.is_empty() {
                value.to_string()
            } else {
                format!(":{}", value.trim_start_matches(':'))
            }
        };
        match (component, operator) {
            ("Registry", "add") => self.registry.push_str(value),
            ("Registry", "remove") => self.registry.clear(),
            ("Registry", "replace") => self.registry = value.to_string(),
            ("Repository", "add") => self.repository.push_str(value),
            ("Repository", "remove") => self.repository.clear(),
            ("Repository", "replace") => self.repository = value.to_string(),
            ("Tag", "add") if self.tag.is_empty() => self.tag = tag_value(),
            ("Tag", "remove") => self.tag.clear(),
            ("Tag", "replace") => self.tag = tag_value(),
            _ => {}
        }
    }
}

impl std::fmt::Display for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.registry.is_empty() {
            write!(f, "{}/", self.registry)?;
        }
        write!(f, "{}{}", self.repository, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_registry_repository_and_tag() {
        let i = Image::parse("registry.example:5000/team/app:1.2");
        assert_eq!(
            (i.registry.as_str(), i.repository.as_str(), i.tag.as_str()),
            ("registry.example:5000", "team/app", ":1.2")
        );
        let j = Image::parse("nginx");
        assert_eq!(
            (j.registry.as_str(), j.repository.as_str(), j.tag.as_str()),
            ("", "nginx", "")
        );
        let d = Image::parse("library/nginx@sha256:abc");
        assert_eq!(
            (d.repository.as_str(), d.tag.as_str()),
            ("library/nginx", "@sha256:abc")
        );
        assert_eq!(d.to_string(), "library/nginx@sha256:abc");
    }

    #[test]
    fn overriders_change_one_component() {
        let mut i = Image::parse("nginx:1.25");
        i.apply("Tag", "replace", "1.27");
        i.apply("Registry", "replace", "mirror.plant-a.local");
        assert_eq!(i.to_string(), "mirror.plant-a.local/nginx:1.27");
        i.apply("Registry", "remove", "");
        i.apply("Tag", "add", "x");
        assert_eq!(i.to_string(), "nginx:1.27", "add leaves an existing tag");
    }
}
