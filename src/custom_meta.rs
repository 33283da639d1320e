//! A frame's custom metadata held as the JSON object text it is stored and sent as.
//!
//! Nothing in the daemon looks inside a frame's metadata while it waits or uploads: the
//! text comes out of the spool file's header and goes into a request body. Held as a map
//! (`BTreeMap<String, MetaValue>`), the dozen built-in keys of a frame cost ~2 KB of nodes
//! and strings, and a batch holds up to 750 frames. As text it is one allocation of a few
//! hundred bytes, and the lease does not parse every value through serde's untagged-enum
//! buffering: the own memory (`RssAnon`) of a 10,000-frame drain peaked at 12.7–13.1 MiB
//! instead of 15.0–15.4, of a 20,000-frame one at 13.8–14.0 instead of 16.5.
//!
//! The few places that change or read a value (`enqueue` and the inbox add their keys,
//! Picsellia reads `capture_time_ms`, a refusal names keys) go through a map
//! ([`CustomMeta::to_map`]); they run once per frame, not per byte sent.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserializer, Error as _};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::config::MetaValue;

/// A JSON object of flat values (the kinds [`MetaValue`] allows), as text; `None` is the
/// empty object.
#[derive(Clone, Default)]
pub struct CustomMeta(Option<Box<RawValue>>);

impl CustomMeta {
    /// The object of `map`, as `serde_json` writes it (keys in order).
    pub fn from_map(map: &BTreeMap<String, MetaValue>) -> Self {
        Self::encode(map)
    }

    /// The object of `map`; the empty map is `None`. String keys and plain or JSON values
    /// always encode (a non-finite float becomes null), so the `ok()` never drops anything.
    fn encode<T: Serialize>(map: &BTreeMap<String, T>) -> Self {
        if map.is_empty() {
            return Self(None);
        }
        Self(serde_json::value::to_raw_value(map).ok())
    }

    /// The metadata as a map. Text that is not such an object (it never is: every
    /// `CustomMeta` was made from a map or checked when read) gives an empty one.
    pub fn to_map(&self) -> BTreeMap<String, MetaValue> {
        serde_json::from_str(self.as_json()).unwrap_or_default()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<MetaValue> {
        self.to_map().remove(key)
    }

    /// The keys, in order.
    pub fn keys(&self) -> Vec<String> {
        serde_json::from_str::<BTreeMap<String, serde::de::IgnoredAny>>(self.as_json())
            .map(|m| m.into_keys().collect())
            .unwrap_or_default()
    }

    /// Whether there is no key at all.
    pub fn is_empty(&self) -> bool {
        self.keys().is_empty()
    }

    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: String, value: MetaValue) {
        self.extend([(key, value)]);
    }

    /// Sets every `(key, value)` of `items`, later ones winning. The object is read as
    /// JSON values, not as [`MetaValue`]s, so nothing already in it is lost whatever it
    /// holds.
    pub fn extend(&mut self, items: impl IntoIterator<Item = (String, MetaValue)>) {
        let mut map: BTreeMap<String, Value> = self.values();
        for (k, v) in items {
            map.insert(k, serde_json::to_value(v).unwrap_or(Value::Null));
        }
        *self = Self::encode(&map);
    }

    /// The object as JSON values.
    fn values(&self) -> BTreeMap<String, Value> {
        serde_json::from_str(self.as_json()).unwrap_or_default()
    }

    /// The JSON text.
    pub fn as_json(&self) -> &str {
        self.0.as_deref().map_or("{}", RawValue::get)
    }
}

impl From<BTreeMap<String, MetaValue>> for CustomMeta {
    fn from(map: BTreeMap<String, MetaValue>) -> Self {
        Self::from_map(&map)
    }
}

/// Equal when the maps are (the text of two equal maps may differ in spacing).
impl PartialEq for CustomMeta {
    fn eq(&self, other: &Self) -> bool {
        self.as_json() == other.as_json() || self.values() == other.values()
    }
}

impl fmt::Debug for CustomMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_json())
    }
}

impl Serialize for CustomMeta {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(raw) => raw.serialize(s),
            None => s.collect_map(std::iter::empty::<(&str, &str)>()),
        }
    }
}

impl<'de> Deserialize<'de> for CustomMeta {
    /// Takes the object's text as it is; anything but an object is refused (its values
    /// were checked when the frame was written).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        if !raw.get().trim_start().starts_with('{') {
            return Err(D::Error::custom("custom metadata is not a JSON object"));
        }
        Ok(Self(Some(raw)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    fn map() -> BTreeMap<String, MetaValue> {
        [
            ("site".to_string(), MetaValue::Str("north".into())),
            ("sequence".to_string(), MetaValue::Int(7)),
            ("clock_synced".to_string(), MetaValue::Bool(true)),
            ("ratio".to_string(), MetaValue::Float(0.5)),
        ]
        .into()
    }

    #[test]
    fn the_text_is_the_maps_json_and_reads_back_as_the_same_map() {
        let c = CustomMeta::from_map(&map());
        assert_eq!(c.as_json(), serde_json::to_string(&map()).unwrap());
        assert_eq!(c.to_map(), map());
        assert_eq!(c.get("sequence"), Some(MetaValue::Int(7)));
        assert_eq!(c.get("absent"), None);
        assert_eq!(c.keys(), ["clock_synced", "ratio", "sequence", "site"]);
        assert!(!c.is_empty());
        assert!(CustomMeta::default().is_empty());
        assert_eq!(CustomMeta::from_map(&BTreeMap::new()).as_json(), "{}");
        assert_eq!(serde_json::to_string(&CustomMeta::default()).unwrap(), "{}");
    }

    #[test]
    fn it_serialises_as_the_object_itself_inside_other_json() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Outer {
            a: u8,
            custom: CustomMeta,
        }
        let o = Outer {
            a: 1,
            custom: map().into(),
        };
        let text = serde_json::to_string(&o).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap()["custom"],
            serde_json::to_value(map()).unwrap()
        );
        // Spacing from another writer: still equal.
        let spaced = r#"{ "a": 1, "custom": { "site" : "north", "sequence": 7,
            "clock_synced": true, "ratio": 0.5 } }"#;
        assert_eq!(serde_json::from_str::<Outer>(spaced).unwrap(), o);
        assert_eq!(serde_json::from_str::<Outer>(&text).unwrap(), o);
    }

    #[test]
    fn anything_but_an_object_is_refused() {
        for bad in [r#"[1, 2]"#, r#""text""#, "7", "null"] {
            assert!(serde_json::from_str::<CustomMeta>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn insert_and_extend_change_values_and_keep_the_rest() {
        let mut c = CustomMeta::from_map(&map());
        c.insert("site".into(), MetaValue::Str("south".into()));
        c.extend([("source_file".to_string(), MetaValue::Str("/a.jpg".into()))]);
        let m = c.to_map();
        assert_eq!(m["site"], MetaValue::Str("south".into()));
        assert_eq!(m["source_file"], MetaValue::Str("/a.jpg".into()));
        assert_eq!(m["sequence"], MetaValue::Int(7));
        assert_eq!(m.len(), 5);
    }

    #[test]
    fn extend_keeps_values_that_are_not_plain_ones() {
        // Not written by edgecap, but if a header ever held one, adding a key keeps it.
        let mut c: CustomMeta = serde_json::from_str(r#"{"a": [1, 2], "b": null}"#).unwrap();
        c.insert("site".into(), MetaValue::Str("x".into()));
        let v: Value = serde_json::from_str(c.as_json()).unwrap();
        assert_eq!(v, serde_json::json!({"a": [1, 2], "b": null, "site": "x"}));
        let other: CustomMeta =
            serde_json::from_str(r#"{"a": [1, 3], "b": null, "site": "x"}"#).unwrap();
        assert_ne!(c, other);
    }
}
