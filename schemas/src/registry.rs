//! The schema registry zcdp carries with it: every released version of every value schema, with
//! a fixed id. The ids are part of the contract (they are in the first bytes of every record), so
//! they are written here, never computed: the same in every process, after every restart.
//!
//! Released versions are immutable. Each carries the SHA-256 of its canonical form; the tests
//! fail when a released file changes, and when a new version cannot read every older one
//! (Confluent's BACKWARD_TRANSITIVE). To change a schema, add `v<N+1>.avsc` and a row here.

use std::sync::LazyLock;

use apache_avro::Schema;
use sha2::{Digest, Sha256};

use crate::topics::Topic;

/// One released schema version.
pub struct SchemaVersion {
    pub id: u32,
    pub topic: Topic,
    pub version: u32,
    /// The `.avsc` text as released.
    pub source: &'static str,
    /// SHA-256 (hex) of the schema's JSON with sorted keys and no whitespace (defaults and docs
    /// included, which the parsing canonical form would drop); guards against in-place edits.
    pub fingerprint: &'static str,
    pub schema: Schema,
}

impl SchemaVersion {
    pub fn subject(&self) -> String {
        self.topic.value_subject()
    }
    /// The schema as a compact JSON string, the way a Confluent registry returns it.
    pub fn schema_json(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(self.source).expect("valid JSON");
        v.to_string()
    }
    pub fn content_fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.schema_json().as_bytes()))
    }
}

struct Row {
    id: u32,
    topic: Topic,
    version: u32,
    source: &'static str,
    fingerprint: &'static str,
}

/// Ids are never reused. Append only.
const ROWS: &[Row] = &[
    Row {
        id: 1,
        topic: Topic::Views,
        version: 1,
        source: include_str!("../avro/zmp.views.v1/v1.avsc"),
        fingerprint: "f01bcdcad3b882b8df8d9c5e8939e7193d25419db59ca2c230318514491dbd10",
    },
    Row {
        id: 2,
        topic: Topic::Carts,
        version: 1,
        source: include_str!("../avro/zmp.carts.v1/v1.avsc"),
        fingerprint: "547fea39df02eada99a5282808f69c5830719c59a461e27a23b858fc1e1e173d",
    },
    Row {
        id: 3,
        topic: Topic::Orders,
        version: 1,
        source: include_str!("../avro/zmp.orders.v1/v1.avsc"),
        fingerprint: "b191e9cdf6f759e75bcdfe9e39b461bb01b8980c7eccc498b233c5e8f30bc0ee",
    },
    Row {
        id: 4,
        topic: Topic::Identities,
        version: 1,
        source: include_str!("../avro/zmp.identities.v1/v1.avsc"),
        fingerprint: "56c77cb8b85ec407146c047878925876faf23e8ddc5080b4a3b8bfef6c6777f4",
    },
    Row {
        id: 5,
        topic: Topic::Engagement,
        version: 1,
        source: include_str!("../avro/zmp.engagement.v1/v1.avsc"),
        fingerprint: "a8dc088bab4206a5d0a85b1c8c15f6b48e7fcb4818a3442b1348b0d1e0f41dd2",
    },
    Row {
        id: 6,
        topic: Topic::DeadLetter,
        version: 1,
        source: include_str!("../avro/zmp.deadletter.v1/v1.avsc"),
        fingerprint: "943709625bdaac95485244cef68587b89407baecbac656fe0b1fc1024614a1f3",
    },
    Row {
        id: 7,
        topic: Topic::Sessions,
        version: 1,
        source: include_str!("../avro/zmp.sessions.v1/v1.avsc"),
        fingerprint: "d35b5b3d0714bc12e491bd3669a55c3e3e03c67d9001374d2acd833b3b7a4ea6",
    },
    Row {
        id: 8,
        topic: Topic::Interests,
        version: 1,
        source: include_str!("../avro/zmp.interests.v1/v1.avsc"),
        fingerprint: "3fe1987a7b53d58d1622b79c05bce99ab7b0b16b5c6eaa423999c58f828da1c2",
    },
    Row {
        id: 9,
        topic: Topic::CartTriggers,
        version: 1,
        source: include_str!("../avro/zmp.cart-triggers.v1/v1.avsc"),
        fingerprint: "6f13357594157ea6b90b0dffdd81728d679b1bc27a3d2ec4c1ec7cde18cf9f5c",
    },
    Row {
        id: 10,
        topic: Topic::Profiles,
        version: 1,
        source: include_str!("../avro/zmp.profiles.v1/v1.avsc"),
        fingerprint: "1de840a53c5bc5a5f5b35a6d50387889c36eda438a5fa35817442146c68ef3ee",
    },
    Row {
        id: 11,
        topic: Topic::Audiences,
        version: 1,
        source: include_str!("../avro/zmp.audiences.v1/v1.avsc"),
        fingerprint: "e621b5249e2b0bdd6e57b6aa55cd4ab21fc0fbb10ca7bc04bec2b448f16a4cf8",
    },
    Row {
        id: 12,
        topic: Topic::Identities,
        version: 2,
        source: include_str!("../avro/zmp.identities.v1/v2.avsc"),
        fingerprint: "17aa12f8a13ed916641e5e0236ce4d0472b4a1d06a71513e5d879b93ec37a5bf",
    },
    Row {
        id: 13,
        topic: Topic::Messages,
        version: 1,
        source: include_str!("../avro/zmp.messages.v1/v1.avsc"),
        fingerprint: "0691d78d38c5cb59800828aa35207d102df3fe9e58b6ac20d59fa0627035caf6",
    },
    Row {
        id: 14,
        topic: Topic::CampaignResults,
        version: 1,
        source: include_str!("../avro/zmp.campaign-results.v1/v1.avsc"),
        fingerprint: "3c8ba8ec6dd9cacd2df8bc9c271eecfe988502843167f22382e0f9b327a29c8a",
    },
    Row {
        id: 15,
        topic: Topic::Activity,
        version: 1,
        source: include_str!("../avro/zmp.activity.v1/v1.avsc"),
        fingerprint: "a69ab25ba8b996655ad7e4cba3680cb7afbe3f878afe892590fe2ec917f166be",
    },
    Row {
        id: 16,
        topic: Topic::Audit,
        version: 1,
        source: include_str!("../avro/zmp.audit.v1/v1.avsc"),
        fingerprint: "e5b3b50bf84a5ff213c77259df5fd9e5ee5c396a135be6a7eda79cf7b75cd634",
    },
    // The input events' `trust` (issue 18): who vouched for each event.
    Row {
        id: 17,
        topic: Topic::Views,
        version: 2,
        source: include_str!("../avro/zmp.views.v1/v2.avsc"),
        fingerprint: "2e5cb462085920caefa0c235a32019e296aa06642281c4aabdb8099693a20c5d",
    },
    Row {
        id: 18,
        topic: Topic::Carts,
        version: 2,
        source: include_str!("../avro/zmp.carts.v1/v2.avsc"),
        fingerprint: "49d10838cc27f18a891762db4710ec4e475b7f1a43b1b28e2fe9798102a4495b",
    },
    Row {
        id: 19,
        topic: Topic::Orders,
        version: 2,
        source: include_str!("../avro/zmp.orders.v1/v2.avsc"),
        fingerprint: "02a77845b756a167ebbbe6efd40a35402318002995f1684ad84c2c43dbb26090",
    },
    Row {
        id: 20,
        topic: Topic::Identities,
        version: 3,
        source: include_str!("../avro/zmp.identities.v1/v3.avsc"),
        fingerprint: "51cf63df82e352b0b45148c5e7f9e9ad32795ffe3c7a0c9dd48d42f584fe3a39",
    },
    Row {
        id: 21,
        topic: Topic::Engagement,
        version: 2,
        source: include_str!("../avro/zmp.engagement.v1/v2.avsc"),
        fingerprint: "0cc7345a8967352c1d0a731d48ed5e75c031492735ee95a22669829ac52b44e4",
    },
    Row {
        id: 22,
        topic: Topic::Profiles,
        version: 2,
        source: include_str!("../avro/zmp.profiles.v1/v2.avsc"),
        fingerprint: "adea6c48c70ede26684b4ad8fbe9c67bc38cfd23a7ffc69dbee8c07419ae4332",
    },
    // The consent decisions, kept for good (issue 19): the consent_changed events themselves, so
    // the identities schema (records carry its id, 20).
    Row {
        id: 23,
        topic: Topic::Consents,
        version: 1,
        source: include_str!("../avro/zmp.identities.v1/v3.avsc"),
        fingerprint: "51cf63df82e352b0b45148c5e7f9e9ad32795ffe3c7a0c9dd48d42f584fe3a39",
    },
    // Campaigns as data (issue 22): the version a decision was taken under, holdout groups and
    // their conversions, the definitions themselves.
    Row {
        id: 24,
        topic: Topic::Messages,
        version: 2,
        source: include_str!("../avro/zmp.messages.v1/v2.avsc"),
        fingerprint: "a915e91e62eda96e3bd4e8ae7f3188104d703063c64b658a8e8ca6a3007d968a",
    },
    Row {
        id: 25,
        topic: Topic::CampaignResults,
        version: 2,
        source: include_str!("../avro/zmp.campaign-results.v1/v2.avsc"),
        fingerprint: "b3f148723903b7ed1fa3047bd6a01da4901087d5560b818de574d92b7e98f4aa",
    },
    Row {
        id: 26,
        topic: Topic::Campaigns,
        version: 1,
        source: include_str!("../avro/zmp.campaigns.v1/v1.avsc"),
        fingerprint: "4144d8ece3b5398f4515b3def03a6491862aec3a94aae7246e4f3d5d13c58dd1",
    },
];

pub struct Registry {
    versions: Vec<SchemaVersion>,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let versions = ROWS
        .iter()
        .map(|r| SchemaVersion {
            id: r.id,
            topic: r.topic,
            version: r.version,
            source: r.source,
            fingerprint: r.fingerprint,
            schema: Schema::parse_str(r.source).unwrap_or_else(|e| panic!("schema {} v{} does not parse: {e}", r.topic, r.version)),
        })
        .collect();
    Registry { versions }
});

/// The registry of this build.
pub fn registry() -> &'static Registry {
    &REGISTRY
}

impl Registry {
    pub fn all(&self) -> &[SchemaVersion] {
        &self.versions
    }
    pub fn by_id(&self, id: u32) -> Option<&SchemaVersion> {
        self.versions.iter().find(|v| v.id == id)
    }
    /// The newest version for a topic's values: what writers use.
    pub fn latest(&self, topic: Topic) -> Option<&SchemaVersion> {
        self.versions.iter().filter(|v| v.topic == topic).max_by_key(|v| v.version)
    }
    pub fn versions_of(&self, topic: Topic) -> impl Iterator<Item = &SchemaVersion> {
        self.versions.iter().filter(move |v| v.topic == topic)
    }
    /// Subjects in catalogue order.
    pub fn subjects(&self) -> Vec<String> {
        let mut topics: Vec<Topic> = self.versions.iter().map(|v| v.topic).collect();
        topics.sort();
        topics.dedup();
        topics.into_iter().map(Topic::value_subject).collect()
    }
    pub fn topic_of_subject(&self, subject: &str) -> Option<Topic> {
        let topic = subject.strip_suffix("-value")?;
        let topic = Topic::from_name(topic)?;
        self.latest(topic).map(|_| topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::schema_compatibility::SchemaCompatibility;

    #[test]
    fn ids_are_unique_and_versions_contiguous() {
        let reg = registry();
        let mut ids: Vec<u32> = reg.all().iter().map(|v| v.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), reg.all().len(), "a schema id is used twice");
        for spec in crate::topics::CATALOGUE {
            let mut versions: Vec<u32> = reg.versions_of(spec.topic).map(|v| v.version).collect();
            versions.sort();
            assert!(versions.iter().copied().eq(1..=versions.len() as u32), "{}: versions {versions:?}", spec.name);
        }
    }

    /// A released schema is immutable: editing one in place would make every record already
    /// written under its id unreadable. Add a new version instead.
    #[test]
    fn released_schemas_are_unchanged() {
        for v in registry().all() {
            assert_eq!(
                v.content_fingerprint(),
                v.fingerprint,
                "{} v{} (id {}) changed after release; add v{}.avsc with a new id instead",
                v.subject(),
                v.version,
                v.id,
                v.version + 1
            );
        }
    }

    /// BACKWARD_TRANSITIVE: the newest schema of a subject reads data written with every older
    /// one, so a consumer upgraded first never fails on old records.
    #[test]
    fn newest_schema_reads_every_older_version() {
        let reg = registry();
        for spec in crate::topics::CATALOGUE {
            let Some(latest) = reg.latest(spec.topic) else { continue };
            for old in reg.versions_of(spec.topic) {
                if let Err(e) = SchemaCompatibility::can_read(&old.schema, &latest.schema) {
                    panic!("{} v{} cannot read v{}: {e}", latest.subject(), latest.version, old.version);
                }
            }
        }
    }

    /// The checker itself must catch a breaking change, or the test above proves nothing.
    #[test]
    fn compatibility_check_catches_a_breaking_change() {
        let old = &registry().latest(Topic::Views).unwrap().schema;
        // A new required field without a default cannot be filled in from old records.
        let mut json: serde_json::Value = serde_json::from_str(registry().latest(Topic::Views).unwrap().source).unwrap();
        json["fields"].as_array_mut().unwrap().push(serde_json::json!({"name": "tenant", "type": "string"}));
        let broken = Schema::parse_str(&json.to_string()).unwrap();
        assert!(SchemaCompatibility::can_read(old, &broken).is_err());
        // With a default it is fine.
        json["fields"].as_array_mut().unwrap().pop();
        json["fields"].as_array_mut().unwrap().push(serde_json::json!({"name": "tenant", "type": "string", "default": ""}));
        let fine = Schema::parse_str(&json.to_string()).unwrap();
        assert!(SchemaCompatibility::can_read(old, &fine).is_ok());
    }
}
