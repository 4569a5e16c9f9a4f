//! torchvision `state_dict` keys ↔ Petal's parameter paths: each family keeps one table of
//! [`KeyRule`]s, and both directions are read from it — the regexes burn-store applies to a
//! file's keys on import, and the torchvision name of one of our paths in error messages.

/// One rule of a family's key mapping: a torchvision key prefix and the Petal path prefix it
/// becomes, each a whole number of `.`-separated segments. `{}` in a segment stands for a
/// number (a block index); both sides hold the same numbers in the same order.
///
/// `KeyRule::new("features.{}.0", "blocks.{}.conv")` maps `features.3.0.weight` to
/// `blocks.3.conv.weight` and back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRule {
    pub torchvision: String,
    pub petal: String,
}

impl KeyRule {
    pub fn new(torchvision: impl Into<String>, petal: impl Into<String>) -> Self {
        let rule = Self {
            torchvision: torchvision.into(),
            petal: petal.into(),
        };
        debug_assert_eq!(
            rule.torchvision.matches("{}").count(),
            rule.petal.matches("{}").count(),
            "{rule:?}: both sides hold the same numbers"
        );
        rule
    }

    /// The rule as burn-store applies it to a file's keys: a regex and its replacement.
    pub fn to_petal_regex(&self) -> (String, String) {
        let numbers = self.torchvision.matches("{}").count();
        let pattern = self
            .torchvision
            .split('.')
            .map(|segment| {
                segment
                    .split("{}")
                    .map(regex_escape)
                    .collect::<Vec<_>>()
                    .join(r"(\d+)")
            })
            .collect::<Vec<_>>()
            .join(r"\.");
        let mut group = 0;
        let replacement: String = self
            .petal
            .split("{}")
            .enumerate()
            .map(|(i, literal)| {
                if i == 0 {
                    literal.to_string()
                } else {
                    group += 1;
                    format!("${{{group}}}{literal}")
                }
            })
            .collect();
        // The segment boundary after the prefix (a `.` or the key's end) is kept as it was.
        (
            format!(r"^{pattern}(\.|$)"),
            format!("{replacement}${{{}}}", numbers + 1),
        )
    }

    /// `key` (a torchvision key) in Petal's naming, if this rule applies to it.
    pub fn to_petal(&self, key: &str) -> Option<String> {
        rewrite(&self.torchvision, &self.petal, key)
    }

    /// `path` (one of Petal's parameter paths) in torchvision's naming, if this rule applies.
    pub fn to_torchvision(&self, path: &str) -> Option<String> {
        rewrite(&self.petal, &self.torchvision, path)
    }
}

fn regex_escape(literal: &str) -> String {
    literal
        .chars()
        .flat_map(|c| {
            let special = r"\.+*?()|[]{}^$#&-~".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// `name` with the prefix that matches template `from` replaced by template `to`, the numbers
/// carried over; `None` when `from` does not match the start of `name`.
fn rewrite(from: &str, to: &str, name: &str) -> Option<String> {
    let mut segments = name.split('.');
    let mut numbers = Vec::new();
    for template in from.split('.') {
        let segment = segments.next()?;
        match template.split_once("{}") {
            None if template == segment => {}
            None => return None,
            Some((before, after)) => {
                let number = segment.strip_prefix(before)?.strip_suffix(after)?;
                if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                numbers.push(number);
            }
        }
    }
    let mut numbers = numbers.into_iter();
    let mut out = String::new();
    for (i, literal) in to.split("{}").enumerate() {
        if i > 0 {
            out.push_str(numbers.next()?);
        }
        out.push_str(literal);
    }
    for rest in segments {
        out.push('.');
        out.push_str(rest);
    }
    Some(out)
}

/// `path` (a parameter path of a network of the family `rules` belong to, as burn names it) in
/// torchvision's naming: burn's enum-variant segments (`ResNet`, `Bottleneck`, capitalised)
/// dropped, the first matching rule applied, and burn's norm names (`gamma`, `beta`) given
/// torchvision's (`weight`, `bias`).
pub fn torchvision_name(rules: &[KeyRule], path: &str) -> String {
    let path: Vec<&str> = path
        .split('.')
        .filter(|s| !s.starts_with(|c: char| c.is_ascii_uppercase()))
        .collect();
    let path = path.join(".");
    let key = rules
        .iter()
        .find_map(|rule| rule.to_torchvision(&path))
        .unwrap_or(path);
    match key.rsplit_once('.') {
        Some((stem, "gamma")) => format!("{stem}.weight"),
        Some((stem, "beta")) => format!("{stem}.bias"),
        _ => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_reads_both_ways() {
        let rule = KeyRule::new("features.{}.{}.block.3", "stages.{}.blocks.{}.pwconv1");
        assert_eq!(
            rule.to_petal("features.5.12.block.3.weight").as_deref(),
            Some("stages.5.blocks.12.pwconv1.weight")
        );
        assert_eq!(
            rule.to_torchvision("stages.5.blocks.12.pwconv1.weight")
                .as_deref(),
            Some("features.5.12.block.3.weight")
        );
        assert_eq!(rule.to_petal("features.5.12.block.30.weight"), None);
        assert_eq!(rule.to_petal("features.x.12.block.3.weight"), None);
        assert_eq!(rule.to_petal("features.5"), None);
        // A number inside a segment.
        let rule = KeyRule::new("layer{}.{}.downsample.0", "layer{}.{}.downsample.conv");
        assert_eq!(
            rule.to_petal("layer3.0.downsample.0.weight").as_deref(),
            Some("layer3.0.downsample.conv.weight")
        );
        assert_eq!(rule.to_petal("layerx.0.downsample.0.weight"), None);
    }

    #[test]
    fn the_regex_does_what_the_rule_says() {
        for (rule, key) in [
            (
                KeyRule::new("features.{}.{}.block.3", "stages.{}.blocks.{}.pwconv1"),
                "features.5.12.block.3.weight",
            ),
            (
                KeyRule::new("features.{}.{}.layer_scale", "s.{}.b.{}.layer_scale"),
                "features.1.2.layer_scale",
            ),
            (KeyRule::new("classifier.2", "head"), "classifier.2.bias"),
            (
                KeyRule::new("layer{}.{}.downsample.1", "layer{}.{}.downsample.bn"),
                "layer4.0.downsample.1.running_var",
            ),
        ] {
            let (pattern, replacement) = rule.to_petal_regex();
            let re = regex::Regex::new(&pattern).unwrap();
            assert_eq!(
                Some(re.replace_all(key, replacement.as_str()).into_owned()),
                rule.to_petal(key),
                "{rule:?} on {key}"
            );
        }
        // Only a prefix that ends at a segment boundary.
        let (pattern, _) = KeyRule::new("classifier.2", "head").to_petal_regex();
        let re = regex::Regex::new(&pattern).unwrap();
        assert!(!re.is_match("classifier.23.weight"));
        assert!(!re.is_match("xclassifier.2.weight"));
    }

    #[test]
    fn torchvision_names_drop_variants_and_use_torch_norm_names() {
        let rules = [KeyRule::new(
            "layer{}.{}.downsample.1",
            "layer{}.{}.downsample.bn",
        )];
        assert_eq!(
            torchvision_name(&rules, "ResNet.layer2.0.Bottleneck.downsample.bn.gamma"),
            "layer2.0.downsample.1.weight"
        );
        assert_eq!(torchvision_name(&rules, "fc.weight"), "fc.weight");
        assert_eq!(torchvision_name(&rules, "bn1.beta"), "bn1.bias");
    }
}
