//! Writing configs in kubectl's shape (`kubectl create secret docker-registry`).

use serde::Serialize;

use super::Format;
use super::go::encode_std;

/// kubectl's `auth`: padded standard base64 of `user:password`.
pub(crate) fn encode_auth(username: &str, password: &str) -> String {
    encode_std(format!("{username}:{password}").as_bytes())
}

/// One registry entry in kubectl's shape.
#[derive(Debug, Clone)]
pub(crate) struct NewEntry {
    pub(crate) server: String,
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) email: Option<String>,
}

/// Serializes entries in kubectl's shape (`username`, `password`, `email` if given, `auth`,
/// in that order), wrapped in `auths` for `.dockerconfigjson`.
pub(crate) fn render_config(entries: &[NewEntry], format: Format) -> String {
    #[derive(Serialize)]
    struct EntryOut<'a> {
        username: &'a str,
        password: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        email: Option<&'a str>,
        auth: String,
    }
    struct Registries<'a>(&'a [NewEntry]);
    impl Serialize for Registries<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = serializer.serialize_map(Some(self.0.len()))?;
            for e in self.0 {
                let out = EntryOut {
                    username: &e.username,
                    password: &e.password,
                    email: e.email.as_deref().filter(|m| !m.is_empty()),
                    auth: encode_auth(&e.username, &e.password),
                };
                map.serialize_entry(&e.server, &out)?;
            }
            map.end()
        }
    }
    #[derive(Serialize)]
    struct ConfigJson<'a> {
        auths: Registries<'a>,
    }
    let registries = Registries(entries);
    let text = match format {
        Format::DockerConfigJson => serde_json::to_string(&ConfigJson { auths: registries }),
        Format::DockerCfg => serde_json::to_string(&registries),
    };
    // Serializing strings into JSON cannot fail.
    text.unwrap_or_default()
}
