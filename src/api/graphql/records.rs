//! The record types of the ESCR, one per catalog entity, each a thin view over a mapped
//! [`Record`] from one source.

use std::sync::Arc;

use std::sync::OnceLock;

use async_graphql::{Context, Enum, Object, ScalarType, SimpleObject, Union, Value, ID};
use chrono::{NaiveDate, NaiveDateTime};
use escr_connector::{EntityKind, Record};

use super::codes::*;
use super::person::Person;
use super::plain::{self, PlainField, PlainRecord};
use crate::api::error::GatewayError;
use crate::api::gateway::Gateway;
use crate::record::loader::RequestLoaders;
use crate::record::source::Lookup;

/// A record and the source it came from.
#[derive(Clone, Debug)]
pub struct Sourced {
    pub source: String,
    /// Shared with the loaders and every field showing it (never copied per field).
    pub record: Arc<Record>,
}

impl Sourced {
    pub fn id(&self) -> ID {
        ID(format!(
            "{}:{}:{}",
            self.source, self.record.entity, self.record.local_id
        ))
    }
    fn s(&self, f: &str) -> Option<String> {
        self.record.text(f).map(str::to_string)
    }
    fn d(&self, f: &str) -> Option<NaiveDate> {
        self.record.date(f)
    }
    fn dt(&self, f: &str) -> Option<NaiveDateTime> {
        self.record.date_time(f)
    }
    fn b(&self, f: &str) -> Option<bool> {
        self.record.bool(f)
    }
    fn n(&self, f: &str) -> Option<f64> {
        self.record.decimal(f)
    }
    fn l(&self, f: &str) -> Vec<String> {
        self.record
            .list(f)
            .map(<[String]>::to_vec)
            .unwrap_or_default()
    }
    fn c<E: FromCode>(&self, f: &str) -> Option<E> {
        self.record.text(f).and_then(E::from_code)
    }

    /// When the record happened, for the timeline (its main date).
    pub fn at(&self) -> Option<NaiveDateTime> {
        let fields: &[&str] = match self.record.entity {
            EntityKind::Referral => &["received_at"],
            EntityKind::Assessment => &["started", "completed", "authorised"],
            EntityKind::Visit => &["actual", "planned"],
            EntityKind::CaseNote | EntityKind::Document => &["date"],
            EntityKind::Communication => &["sent_at"],
            EntityKind::Consent => &["given", "withdrawn"],
            _ => &["start"],
        };
        fields.iter().find_map(|f| self.record.date_time(f))
    }
}

/// Where a record lives in the legacy estate.
#[derive(SimpleObject)]
#[graphql(shareable)]
pub struct Provenance {
    /// The configured source name ("casetrak").
    pub source: String,
    /// The record's id in that source.
    pub local_id: String,
    pub last_updated: Option<NaiveDateTime>,
}

/// Sensitivity labels (safeguarding, mental_health, sealed, ...).
#[derive(SimpleObject)]
#[graphql(shareable)]
pub struct Security {
    pub labels: Vec<String>,
}

macro_rules! record_type {
    ($(#[$doc:meta])* $name:ident { $( $(#[$m:meta])* $field:ident $(as $gql:literal)? : $ty:ty = $get:ident($col:literal) ),* $(,)? }) => {
        record_type!($(#[$doc])* $name { $( $(#[$m])* $field $(as $gql)? : $ty = $get($col) ),* } resolvers {});
    };
    // `resolvers { ... }`: extra resolvers that need the context (links to other objects);
    // lists of the type answer them the generic way (`plain.rs`).
    ($(#[$doc:meta])* $name:ident { $( $(#[$m:meta])* $field:ident $(as $gql:literal)? : $ty:ty = $get:ident($col:literal) ),* $(,)? } resolvers { $( $(#[$xm:meta])* async fn $extra:ident ($($args:tt)*) -> $ret:ty $body:block )* }) => {
        $(#[$doc])*
        pub struct $name(pub Sourced);

        #[Object(shareable)]
        impl $name {
            /// Gateway-wide id of this record: source, entity and local id.
            async fn id(&self) -> ID {
                self.0.id()
            }
            async fn provenance(&self) -> Provenance {
                Provenance {
                    source: self.0.source.clone(),
                    local_id: self.0.record.local_id.clone(),
                    last_updated: self.0.record.last_updated,
                }
            }
            async fn security(&self) -> Security {
                Security { labels: self.0.record.labels.iter().cloned().collect() }
            }
            $(
                $(#[$m])*
                $(#[graphql(name = $gql)])?
                async fn $field(&self) -> $ty {
                    self.0.$get($col)
                }
            )*
            $( $(#[$xm])* async fn $extra ($($args)*) -> $ret $body )*
        }

        impl PlainRecord for $name {
            const TYPE: &'static str = stringify!($name);
            const CONTEXTUAL: &'static [&'static str] = &[$(stringify!($extra)),*];
            fn sourced(&self) -> &Sourced {
                &self.0
            }
            fn plain_fields() -> &'static [(String, PlainField)] {
                static TABLE: OnceLock<Vec<(String, PlainField)>> = OnceLock::new();
                TABLE.get_or_init(|| {
                    let mut fields = common_plain_fields();
                    $(
                        let renamed: &[&str] = &[$($gql)?];
                        let graphql = renamed
                            .first()
                            .map_or_else(|| plain::camel(stringify!($field)), |n| n.to_string());
                        fields.push((graphql, PlainField::Leaf(|r: &Sourced| {
                            let value: $ty = r.$get($col);
                            plain_value!($get, value)
                        })));
                    )*
                    fields
                })
            }
        }
    };
}

/// A plain field's value as async-graphql's own scalars and enums write it.
macro_rules! plain_value {
    (c, $v:expr) => {
        $v.map(async_graphql::resolver_utils::enum_value)
            .unwrap_or(Value::Null)
    };
    (l, $v:expr) => {
        Value::List($v.into_iter().map(Value::String).collect())
    };
    (s, $v:expr) => {
        $v.map(Value::String).unwrap_or(Value::Null)
    };
    (d, $v:expr) => {
        $v.map(plain::date_value).unwrap_or(Value::Null)
    };
    (dt, $v:expr) => {
        $v.map(plain::date_time_value).unwrap_or(Value::Null)
    };
    ($scalar:ident, $v:expr) => {
        $v.map(|x| ScalarType::to_value(&x)).unwrap_or(Value::Null)
    };
}

/// `id`, `provenance` and `security`, which every record type has.
fn common_plain_fields() -> Vec<(String, PlainField)> {
    vec![
        ("id".into(), PlainField::Leaf(|r| Value::String(r.id().0))),
        (
            "provenance".into(),
            PlainField::Object {
                type_name: "Provenance",
                fields: &[
                    ("source", |r| Value::String(r.source.clone())),
                    ("localId", |r| Value::String(r.record.local_id.clone())),
                    ("lastUpdated", |r| {
                        r.record
                            .last_updated
                            .map(plain::date_time_value)
                            .unwrap_or(Value::Null)
                    }),
                ],
            },
        ),
        (
            "security".into(),
            PlainField::Object {
                type_name: "Security",
                fields: &[("labels", |r| {
                    Value::List(r.record.labels.iter().cloned().map(Value::String).collect())
                })],
            },
        ),
    ]
}

record_type!(
    /// A postal address of the person.
    Address {
        address_use as "use": Option<AddressUse> = c("use"),
        /// The source's own value when `use` is OTHER.
        use_other: Option<String> = s("use_other"),
        line1: Option<String> = s("line1"),
        line2: Option<String> = s("line2"),
        line3: Option<String> = s("line3"),
        line4: Option<String> = s("line4"),
        postcode: Option<String> = s("postcode"),
        start: Option<NaiveDate> = d("start"),
        end: Option<NaiveDate> = d("end"),
    }
);

record_type!(
    /// A family or caring relationship recorded in the source.
    Relationship {
        relationship_type as "type": Option<RelationshipType> = c("type"),
        /// The source's own value when `type` is OTHER.
        type_other: Option<String> = s("type_other"),
        /// The related person's id in the same source.
        related_local_id: Option<String> = s("related_person_id"),
        parental_responsibility: Option<bool> = b("parental_responsibility"),
        carer: Option<bool> = b("carer"),
        start: Option<NaiveDate> = d("start"),
        end: Option<NaiveDate> = d("end"),
    }
    resolvers {
        /// The related person's own record, when the index knows them; subject to the
        /// same access decision as asking for that person directly.
        async fn related_person(&self, ctx: &Context<'_>) -> Option<Person> {
            let local_id = self.0.record.text("related_person_id")?;
            let gateway = ctx.data_unchecked::<Arc<Gateway>>();
            let id = gateway.index.snapshot().by_source(&self.0.source, local_id)?.to_string();
            super::person_by_id(ctx, &id).await
        }
    }
);

record_type!(
    /// A request for support (contact or referral).
    Referral {
        received_at: Option<NaiveDateTime> = dt("received_at"),
        route: Option<ReferralRoute> = c("route"),
        /// The source's own value when `route` is OTHER.
        route_other: Option<String> = s("route_other"),
        reason: Option<String> = s("reason"),
        outcome: Option<ReferralOutcome> = c("outcome"),
        /// The source's own value when `outcome` is OTHER.
        outcome_other: Option<String> = s("outcome_other"),
        closed_at: Option<NaiveDateTime> = dt("closed_at"),
        /// Children's or adults' social care.
        service_area: Option<ServiceArea> = c("service_area"),
    }
);

record_type!(
    /// An assessment of needs (or a review).
    Assessment {
        assessment_type as "type": Option<AssessmentType> = c("type"),
        /// The source's own value (or the deployment's added one) when `type` is OTHER.
        type_other: Option<String> = s("type_other"),
        title: Option<String> = s("title"),
        started: Option<NaiveDate> = d("started"),
        completed: Option<NaiveDate> = d("completed"),
        authorised: Option<NaiveDate> = d("authorised"),
        /// `started` with its time of day, where the source keeps one (else midnight).
        started_at: Option<NaiveDateTime> = dt("started"),
        completed_at: Option<NaiveDateTime> = dt("completed"),
        authorised_at: Option<NaiveDateTime> = dt("authorised"),
        eligible: Option<bool> = b("eligible"),
        outcome: Option<String> = s("outcome"),
        worker_id: Option<String> = s("worker_id"),
    }
);

record_type!(
    /// A care and support plan.
    CarePlan {
        start: Option<NaiveDate> = d("start"),
        end: Option<NaiveDate> = d("end"),
        goals: Vec<String> = l("goals"),
        needs: Option<String> = s("needs"),
        personal_budget: Option<f64> = n("personal_budget"),
    }
);

record_type!(
    /// A service provided or commissioned (a package of care).
    Service {
        service_type as "type": Option<ServiceType> = c("type"),
        /// The source's own value (or the deployment's added one) when `type` is OTHER.
        type_other: Option<String> = s("type_other"),
        component: Option<String> = s("component"),
        delivery_mechanism: Option<DeliveryMechanism> = c("delivery_mechanism"),
        delivery_mechanism_other: Option<String> = s("delivery_mechanism_other"),
        provider: Option<String> = s("provider"),
        /// In pounds.
        unit_cost: Option<f64> = n("unit_cost"),
        units_per_week: Option<f64> = n("units_per_week"),
        start: Option<NaiveDate> = d("start"),
        end: Option<NaiveDate> = d("end"),
        /// Long-term support by setting, or short-term support (Client Level Data).
        support_category: Option<SupportCategory> = c("support_category"),
        permanence: Option<Permanence> = c("permanence"),
        funding: Option<Funding> = c("funding"),
    }
);

record_type!(
    /// A statutory episode: child in need, protection plan, looked after, adult case.
    Episode {
        kind: Option<EpisodeKind> = c("kind"),
        kind_other: Option<String> = s("kind_other"),
        /// Category of abuse (child protection plans).
        category: Option<AbuseCategory> = c("category"),
        category_other: Option<String> = s("category_other"),
        start: Option<NaiveDate> = d("start"),
        end: Option<NaiveDate> = d("end"),
    }
);

record_type!(
    /// A visit or appointment: planned and actual.
    Visit {
        visit_type as "type": Option<String> = s("type"),
        title: Option<String> = s("title"),
        planned: Option<NaiveDateTime> = dt("planned"),
        actual: Option<NaiveDateTime> = dt("actual"),
        /// When the visit ended.
        end: Option<NaiveDateTime> = dt("end"),
        seen: Option<bool> = b("seen"),
        seen_alone: Option<bool> = b("seen_alone"),
        worker_id: Option<String> = s("worker_id"),
    }
    resolvers {
        /// The worker who made (or was to make) the visit.
        async fn worker(&self, ctx: &Context<'_>) -> Option<Worker> {
            Worker::load(ctx, &self.0.source, self.0.record.text("worker_id")?).await
        }
    }
);

record_type!(
    /// A case note.
    CaseNote {
        date: Option<NaiveDateTime> = dt("date"),
        note_type as "type": Option<String> = s("type"),
        subject: Option<String> = s("subject"),
        text: Option<String> = s("text"),
        worker_id: Option<String> = s("worker_id"),
    }
    resolvers {
        /// The worker who wrote the note.
        async fn worker(&self, ctx: &Context<'_>) -> Option<Worker> {
            Worker::load(ctx, &self.0.source, self.0.record.text("worker_id")?).await
        }
    }
);

record_type!(
    /// A letter, form or scanned document.
    Document {
        document_type as "type": Option<DocumentType> = c("type"),
        type_other: Option<String> = s("type_other"),
        direction: Option<Direction> = c("direction"),
        title: Option<String> = s("title"),
        date: Option<NaiveDate> = d("date"),
        /// `date` with its time of day, where the source keeps one (else midnight).
        date_time: Option<NaiveDateTime> = dt("date"),
        /// The media type the source declares (the content's own type is in its
        /// `Content-Type`).
        media_type: Option<String> = s("media_type"),
    }
    resolvers {
        /// Where to `GET` the document's file (relative to the gateway, with the same
        /// token and purpose as this request): the same decision as this record, audited
        /// as a release; ranges allowed. Null when the source has no document store or
        /// the record names no file the store can hold. The vendor's own path is never
        /// given out.
        async fn content_url(&self, ctx: &Context<'_>) -> Option<String> {
            let gateway = ctx.data_opt::<Arc<Gateway>>()?;
            crate::api::documents::content_url(gateway, &self.0)
        }
    }
);

record_type!(
    /// An email.
    Communication {
        /// Received (INCOMING) or sent (OUTGOING) by the council.
        direction: Option<Direction> = c("direction"),
        sender: Option<String> = s("sender"),
        recipients: Vec<String> = l("recipients"),
        subject: Option<String> = s("subject"),
        sent_at: Option<NaiveDateTime> = dt("sent_at"),
        body: Option<String> = s("body"),
    }
    resolvers {
        /// Files attached to the email, where the source keeps them: documents of the
        /// same person and source, each with its own access decision.
        async fn attachments(&self, ctx: &Context<'_>) -> Vec<Document> {
            let gateway = ctx.data_unchecked::<Arc<Gateway>>();
            let Some(id) = self.0.record.person_id.as_deref().and_then(|local| {
                Some(gateway.index.snapshot().by_source(&self.0.source, local)?.to_string())
            }) else {
                return Vec::new();
            };
            let Some(person) = super::person_by_id(ctx, &id).await else {
                return Vec::new();
            };
            let mut attached: Vec<Sourced> = super::person::person_records(ctx, &person, EntityKind::Document)
                .await
                .into_iter()
                .filter(|d| {
                    d.source == self.0.source
                        && d.record.text("communication_id") == Some(self.0.record.local_id.as_str())
                })
                .collect();
            attached.sort_by(|a, b| a.record.local_id.cmp(&b.record.local_id));
            attached.into_iter().map(Document).collect()
        }
    }
);

record_type!(
    /// A warning or alert on the record.
    Alert {
        code: Option<String> = s("code"),
        narrative: Option<String> = s("narrative"),
        start: Option<NaiveDate> = d("start"),
        end: Option<NaiveDate> = d("end"),
        review_date: Option<NaiveDate> = d("review_date"),
    }
);

record_type!(
    /// A consent (or refusal) recorded in a source system.
    Consent {
        scope: Option<ConsentScope> = c("scope"),
        /// The source's own value (partner agency, research) when `scope` is OTHER.
        scope_other: Option<String> = s("scope_other"),
        decision: Option<ConsentDecision> = c("decision"),
        given: Option<NaiveDate> = d("given"),
        withdrawn: Option<NaiveDate> = d("withdrawn"),
    }
);

record_type!(
    /// A worker or team allocated to the person.
    Allocation {
        worker_id: Option<String> = s("worker_id"),
        team_id: Option<String> = s("team_id"),
        start: Option<NaiveDate> = d("start"),
        end: Option<NaiveDate> = d("end"),
    }
    resolvers {
        async fn worker(&self, ctx: &Context<'_>) -> Option<Worker> {
            Worker::load(ctx, &self.0.source, self.0.record.text("worker_id")?).await
        }
        async fn team(&self, ctx: &Context<'_>) -> Option<Team> {
            Team::load(ctx, &self.0.source, self.0.record.text("team_id")?).await
        }
    }
);

/// Load one staff record (worker or team) by key through the request's loaders. Staff
/// records are not personal data of the person, so they do not pass the consent hook;
/// a failing source adds SOURCE_UNAVAILABLE like any other load.
async fn staff_record(
    ctx: &Context<'_>,
    source: &str,
    entity: EntityKind,
    key: &str,
) -> Option<Sourced> {
    let loaders = ctx.data_unchecked::<RequestLoaders>();
    let index = loaders.fetcher().source_index(source)?;
    if !loaders.fetcher().sources[index].holds(entity) {
        return None;
    }
    match loaders.load(index, entity, Lookup::ByKey, key).await {
        Ok(records) => records.first().map(|record| Sourced {
            source: source.to_string(),
            record: record.clone(),
        }),
        Err(e) => {
            let err = GatewayError::Source((*e).clone()).to_server_error(Some(ctx.item.pos));
            ctx.add_error(ctx.set_error_path(err));
            None
        }
    }
}

/// A practitioner in a source system (social worker, occupational therapist, ...).
pub struct Worker(pub Sourced);

impl Worker {
    async fn load(ctx: &Context<'_>, source: &str, key: &str) -> Option<Worker> {
        staff_record(ctx, source, EntityKind::Worker, key)
            .await
            .map(Worker)
    }
}

#[Object(shareable)]
impl Worker {
    /// Gateway-wide id: source, entity and local id.
    async fn id(&self) -> ID {
        self.0.id()
    }
    async fn name(&self) -> Option<String> {
        self.0.s("name")
    }
    /// The source's role code (e.g. "SW", "OT").
    async fn role(&self) -> Option<String> {
        self.0.s("role")
    }
    async fn team(&self, ctx: &Context<'_>) -> Option<Team> {
        Team::load(ctx, &self.0.source, self.0.record.text("team_id")?).await
    }
}

/// A team in a source system.
pub struct Team(pub Sourced);

impl Team {
    async fn load(ctx: &Context<'_>, source: &str, key: &str) -> Option<Team> {
        staff_record(ctx, source, EntityKind::Team, key)
            .await
            .map(Team)
    }
}

#[Object(shareable)]
impl Team {
    /// Gateway-wide id: source, entity and local id.
    async fn id(&self) -> ID {
        self.0.id()
    }
    async fn name(&self) -> Option<String> {
        self.0.s("name")
    }
}

/// Kinds of record on a person's timeline.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    Address,
    Relationship,
    Referral,
    Assessment,
    CarePlan,
    Service,
    Episode,
    Visit,
    CaseNote,
    Document,
    Communication,
    Alert,
    Consent,
    Allocation,
}

impl RecordKind {
    pub const ALL: [RecordKind; 14] = [
        RecordKind::Address,
        RecordKind::Relationship,
        RecordKind::Referral,
        RecordKind::Assessment,
        RecordKind::CarePlan,
        RecordKind::Service,
        RecordKind::Episode,
        RecordKind::Visit,
        RecordKind::CaseNote,
        RecordKind::Document,
        RecordKind::Communication,
        RecordKind::Alert,
        RecordKind::Consent,
        RecordKind::Allocation,
    ];

    pub fn entity(self) -> EntityKind {
        match self {
            RecordKind::Address => EntityKind::Address,
            RecordKind::Relationship => EntityKind::Relationship,
            RecordKind::Referral => EntityKind::Referral,
            RecordKind::Assessment => EntityKind::Assessment,
            RecordKind::CarePlan => EntityKind::CarePlan,
            RecordKind::Service => EntityKind::Service,
            RecordKind::Episode => EntityKind::Episode,
            RecordKind::Visit => EntityKind::Visit,
            RecordKind::CaseNote => EntityKind::CaseNote,
            RecordKind::Document => EntityKind::Document,
            RecordKind::Communication => EntityKind::Communication,
            RecordKind::Alert => EntityKind::Alert,
            RecordKind::Consent => EntityKind::Consent,
            RecordKind::Allocation => EntityKind::Allocation,
        }
    }

    pub fn of(entity: EntityKind) -> Option<RecordKind> {
        RecordKind::ALL.into_iter().find(|k| k.entity() == entity)
    }
}

/// Any record, for the timeline.
#[derive(Union)]
pub enum AnyRecord {
    Address(Address),
    Relationship(Relationship),
    Referral(Referral),
    Assessment(Assessment),
    CarePlan(CarePlan),
    Service(Service),
    Episode(Episode),
    Visit(Visit),
    CaseNote(CaseNote),
    Document(Document),
    Communication(Communication),
    Alert(Alert),
    Consent(Consent),
    Allocation(Allocation),
}

impl AnyRecord {
    pub fn from_sourced(r: Sourced) -> Option<AnyRecord> {
        Some(match r.record.entity {
            EntityKind::Address => AnyRecord::Address(Address(r)),
            EntityKind::Relationship => AnyRecord::Relationship(Relationship(r)),
            EntityKind::Referral => AnyRecord::Referral(Referral(r)),
            EntityKind::Assessment => AnyRecord::Assessment(Assessment(r)),
            EntityKind::CarePlan => AnyRecord::CarePlan(CarePlan(r)),
            EntityKind::Service => AnyRecord::Service(Service(r)),
            EntityKind::Episode => AnyRecord::Episode(Episode(r)),
            EntityKind::Visit => AnyRecord::Visit(Visit(r)),
            EntityKind::CaseNote => AnyRecord::CaseNote(CaseNote(r)),
            EntityKind::Document => AnyRecord::Document(Document(r)),
            EntityKind::Communication => AnyRecord::Communication(Communication(r)),
            EntityKind::Alert => AnyRecord::Alert(Alert(r)),
            EntityKind::Consent => AnyRecord::Consent(Consent(r)),
            EntityKind::Allocation => AnyRecord::Allocation(Allocation(r)),
            EntityKind::Person | EntityKind::Worker | EntityKind::Team => return None,
        })
    }
}

/// A one-line description for the timeline (no free text: subjects and titles only).
pub fn summary(r: &Sourced) -> String {
    let rec = &r.record;
    let t = |f: &str| rec.text(f).unwrap_or("").to_string();
    // A code that is canonically OTHER reads as the source's own value.
    let code = |f: &str| match (rec.text(f), escr_connector::catalog::other_field(f)) {
        (Some(escr_connector::catalog::OTHER), Some(other)) if rec.text(other).is_some() => {
            t(other)
        }
        _ => t(f),
    };
    match rec.entity {
        EntityKind::Referral => format!("Referral ({})", t("route").to_lowercase()),
        EntityKind::Assessment if rec.text("title").is_some() => {
            format!("Assessment: {}", t("title"))
        }
        EntityKind::Assessment => format!("Assessment {}", code("type").to_lowercase()),
        EntityKind::CarePlan => "Care plan".into(),
        EntityKind::Service => format!(
            "Service {} ({})",
            code("type").to_lowercase(),
            t("delivery_mechanism").to_lowercase()
        ),
        EntityKind::Episode => format!("Episode {}", t("kind").to_lowercase()),
        EntityKind::Visit if rec.text("title").is_some() => format!("Visit: {}", t("title")),
        EntityKind::Visit => format!("Visit {}", t("type")),
        EntityKind::CaseNote => format!("Case note: {}", t("subject")),
        EntityKind::Document => format!("{}: {}", t("type").to_lowercase(), t("title")),
        EntityKind::Communication => format!("Email: {}", t("subject")),
        EntityKind::Alert => format!("Alert {}", t("code")),
        EntityKind::Consent => format!(
            "Consent {} {}",
            t("scope").to_lowercase(),
            t("decision").to_lowercase()
        ),
        EntityKind::Address => "Address".into(),
        EntityKind::Relationship => format!("Relationship {}", t("type").to_lowercase()),
        EntityKind::Allocation => "Allocation".into(),
        other => other.to_string(),
    }
    .trim()
    .to_string()
}
