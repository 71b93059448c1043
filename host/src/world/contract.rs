//! Contract versioning: which `weir:orders` versions the host accepts, and a precise check of
//! a candidate component against them, run before instantiation (admission, start-up load,
//! `weir plugin check`).
//!
//! The expected side is the WIT itself: each accepted version's `orders.wit` (the very file
//! `bindgen!` reads) is parsed with `wit-parser`, the crate wasmtime's own bindings generator
//! uses (same version as in Cargo.lock), so names of types, fields and cases come from the
//! contract. The candidate side is what wasmtime decoded from the component
//! ([`wasmtime::component::Component::component_type`]), so nothing is decoded twice.
//!
//! The comparison walks the world: every export function the world requires, and every
//! `weir:orders` interface the component imports (its functions and its types). It reports
//! typed [`Mismatch`]es, at most [`MAX_MISMATCHES`] of them (the rest are counted in
//! [`ContractReport::omitted`]); plugin-supplied names are cut at [`MAX_NAME_CHARS`]
//! characters. Imports of other packages are left to the WASI allow-list
//! (`runtime::wasi::check_imports`, which runs first).

use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use wasmtime::Engine;
use wasmtime::component::types::{self as wt, ComponentItem};
use wit_parser::{
    Function, Handle, InterfaceId, Resolve, Type as WType, TypeDefKind, TypeId, TypeOwner, WorldId,
    WorldItem,
};

use super::{ACCEPTED_VERSIONS, PACKAGE};

/// Most mismatches one report keeps; the rest are counted.
pub const MAX_MISMATCHES: usize = 32;

/// Longest plugin-supplied name a mismatch keeps, in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// Deepest type nesting compared; deeper is reported as a difference.
const MAX_DEPTH: usize = 32;

/// The WIT source of each accepted version, newest last. A released version's file is never
/// edited; a new version adds a file and an entry here (see `wit/README.md`).
const SOURCES: &[(&str, &str)] = &[("0.1.0", include_str!("../../../wit/orders.wit"))];

/// The newest accepted version and its WIT source (what `weir plugin new --lang python` writes
/// into a project as `wit/orders.wit`).
pub fn newest_source() -> (&'static str, &'static str) {
    *SOURCES.last().expect("at least one accepted version")
}

/// Import or export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The component imports it.
    Import,
    /// The component exports it.
    Export,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Import => "import",
            Direction::Export => "export",
        })
    }
}

/// One way a component differs from the contract.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mismatch {
    /// An import or export of `weir:orders` at a version the host does not accept.
    UnsupportedVersion {
        /// Import or export.
        direction: Direction,
        /// The item, e.g. `weir:orders/types@0.2.0`.
        item: String,
        /// The version seen (empty when unversioned).
        version: String,
        /// The versions the host accepts.
        accepted: Vec<String>,
    },
    /// A `weir:orders` interface the host's world does not have.
    UnknownInterface {
        /// Import or export.
        direction: Direction,
        /// The item.
        item: String,
    },
    /// A function of the world the component does not export.
    MissingExport {
        /// The function, e.g. `place-order`.
        function: String,
    },
    /// An item the world has as a function is something else in the component.
    NotAFunction {
        /// Import or export.
        direction: Direction,
        /// The item.
        item: String,
    },
    /// A function or type imported from an interface of the world that has no such item.
    UnknownItem {
        /// The interface, e.g. `weir:orders/catalog@0.1.0`.
        interface: String,
        /// The item's name.
        item: String,
    },
    /// A function has another number of parameters.
    ParamCount {
        /// The interface, or `None` for a function of the world itself.
        interface: Option<String>,
        /// The function.
        function: String,
        /// The contract's parameter names.
        expected: Vec<String>,
        /// The component's parameter names.
        found: Vec<String>,
    },
    /// A parameter has another name.
    ParamName {
        /// The interface, or `None` for a function of the world itself.
        interface: Option<String>,
        /// The function.
        function: String,
        /// 0-based position.
        position: usize,
        /// The contract's name.
        expected: String,
        /// The component's name.
        found: String,
    },
    /// A parameter has another type.
    ParamType {
        /// The interface, or `None` for a function of the world itself.
        interface: Option<String>,
        /// The function.
        function: String,
        /// The parameter.
        param: String,
        /// The contract's type.
        expected: String,
        /// The component's type.
        found: String,
    },
    /// The result has another type.
    ResultType {
        /// The interface, or `None` for a function of the world itself.
        interface: Option<String>,
        /// The function.
        function: String,
        /// The contract's result type (`none` for no result).
        expected: String,
        /// The component's.
        found: String,
    },
    /// A named type of the contract has another shape.
    Type {
        /// The interface that defines it, e.g. `types`.
        interface: String,
        /// The type, e.g. `order-line`.
        name: String,
        /// How it differs.
        change: TypeChange,
    },
}

/// How a named type differs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum TypeChange {
    /// Another kind of type altogether (a record where an enum is expected...).
    Kind {
        /// The contract's kind.
        expected: String,
        /// The component's.
        found: String,
    },
    /// A record field the contract does not have.
    FieldAdded {
        /// The field.
        field: String,
    },
    /// A record field of the contract the component does not have.
    FieldRemoved {
        /// The field.
        field: String,
    },
    /// A record field renamed (one removed and one added at the same position).
    FieldRenamed {
        /// The contract's name.
        expected: String,
        /// The component's.
        found: String,
    },
    /// A record field of another type.
    FieldType {
        /// The field.
        field: String,
        /// The contract's type.
        expected: String,
        /// The component's.
        found: String,
    },
    /// The same fields in another order.
    FieldsReordered {
        /// The component's order.
        found: Vec<String>,
    },
    /// A variant, enum or flags case the contract does not have.
    CaseAdded {
        /// The case.
        case: String,
    },
    /// A case of the contract the component does not have.
    CaseRemoved {
        /// The case.
        case: String,
    },
    /// A case renamed (one removed and one added at the same position).
    CaseRenamed {
        /// The contract's name.
        expected: String,
        /// The component's.
        found: String,
    },
    /// A variant case with another payload.
    CasePayload {
        /// The case.
        case: String,
        /// The contract's payload (`none` for none).
        expected: String,
        /// The component's.
        found: String,
    },
    /// The same cases in another order.
    CasesReordered {
        /// The component's order.
        found: Vec<String>,
    },
}

/// The outcome of [`check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractReport {
    /// The contract versions the host accepts.
    pub accepted_versions: Vec<String>,
    /// The version compared against (the one the component imports, else the newest).
    pub compared_with: String,
    /// The differences, at most [`MAX_MISMATCHES`].
    pub mismatches: Vec<Mismatch>,
    /// Differences found beyond [`MAX_MISMATCHES`] and left out.
    pub omitted: usize,
    /// Whether the component uses nothing of `weir:orders` at all (no import of the package,
    /// none of the world's exports): another world rather than another version of this one.
    pub other_world: bool,
}

impl ContractReport {
    /// No difference.
    pub fn is_compatible(&self) -> bool {
        self.mismatches.is_empty() && self.omitted == 0
    }
}

/// One parsed contract version.
struct Contract {
    version: &'static str,
    resolve: Resolve,
    world: WorldId,
}

fn contracts() -> &'static [Contract] {
    static CONTRACTS: OnceLock<Vec<Contract>> = OnceLock::new();
    CONTRACTS.get_or_init(|| {
        SOURCES
            .iter()
            .map(|(version, source)| {
                let mut resolve = Resolve::new();
                let package = resolve
                    .push_str("orders.wit", source)
                    .unwrap_or_else(|e| panic!("wit/orders.wit {version} parses: {e:#}"));
                let world = resolve
                    .select_world(&[package], Some("plugin"))
                    .unwrap_or_else(|e| panic!("wit/orders.wit {version} has world plugin: {e:#}"));
                Contract {
                    version,
                    resolve,
                    world,
                }
            })
            .collect()
    })
}

/// A `weir:orders` item name split: `weir:orders/catalog@0.1.0` -> (`catalog`, `0.1.0`).
fn orders_item(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(PACKAGE)?.strip_prefix('/')?;
    Some(match rest.split_once('@') {
        Some((interface, version)) => (interface, version),
        None => (rest, ""),
    })
}

/// `s` cut at [`MAX_NAME_CHARS`] characters with the number of bytes cut.
fn bounded(s: &str) -> String {
    match s.char_indices().nth(MAX_NAME_CHARS) {
        None => s.to_owned(),
        Some((at, _)) => format!("{}... ({} bytes cut)", &s[..at], s.len() - at),
    }
}

/// Compare the component of type `component` with the accepted contract versions.
pub fn check(engine: &Engine, component: &wt::Component) -> ContractReport {
    let accepted: Vec<String> = ACCEPTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect();
    let all = contracts();
    let seen = component
        .imports(engine)
        .chain(component.exports(engine))
        .filter_map(|(name, _)| orders_item(name))
        .find_map(|(_, v)| all.iter().find(|c| c.version == v));
    let contract = seen.or_else(|| all.last()).expect("one contract version");
    let mut cx = Compare {
        resolve: &contract.resolve,
        out: Collector::default(),
        memo: Vec::new(),
        named_diffs: 0,
    };
    let mut uses_package = false;

    for (direction, items) in [
        (
            Direction::Import,
            component.imports(engine).collect::<Vec<_>>(),
        ),
        (
            Direction::Export,
            component.exports(engine).collect::<Vec<_>>(),
        ),
    ] {
        for (name, item) in items {
            let Some((interface, version)) = orders_item(name) else {
                continue;
            };
            uses_package = true;
            if !ACCEPTED_VERSIONS.contains(&version) {
                cx.out.push(Mismatch::UnsupportedVersion {
                    direction,
                    item: bounded(name),
                    version: bounded(version),
                    accepted: accepted.clone(),
                });
                continue;
            }
            let expected = match direction {
                Direction::Import => world_interface(contract, interface),
                // The world exports functions only.
                Direction::Export => None,
            };
            let Some(expected) = expected else {
                cx.out.push(Mismatch::UnknownInterface {
                    direction,
                    item: bounded(name),
                });
                continue;
            };
            match item.ty {
                ComponentItem::ComponentInstance(instance) => {
                    cx.instance(name, expected, engine, &instance)
                }
                _ => cx.out.push(Mismatch::NotAFunction {
                    direction,
                    item: bounded(name),
                }),
            }
        }
    }

    let world = &contract.resolve.worlds[contract.world];
    for item in world.exports.values() {
        let WorldItem::Function(function) = item else {
            continue;
        };
        match component.get_export(engine, &function.name).map(|e| e.ty) {
            None => cx.out.push(Mismatch::MissingExport {
                function: function.name.clone(),
            }),
            Some(ComponentItem::ComponentFunc(found)) => {
                uses_package = true;
                cx.function(None, function, &found);
            }
            Some(_) => {
                uses_package = true;
                cx.out.push(Mismatch::NotAFunction {
                    direction: Direction::Export,
                    item: function.name.clone(),
                });
            }
        }
    }

    ContractReport {
        accepted_versions: accepted,
        compared_with: contract.version.to_owned(),
        mismatches: cx.out.kept,
        omitted: cx.out.omitted,
        other_world: !uses_package,
    }
}

/// The interface of the world's imports named `name`.
fn world_interface(contract: &Contract, name: &str) -> Option<InterfaceId> {
    let resolve = &contract.resolve;
    resolve.worlds[contract.world]
        .imports
        .values()
        .find_map(|item| match item {
            WorldItem::Interface { id, .. }
                if resolve.interfaces[*id].name.as_deref() == Some(name) =>
            {
                Some(*id)
            }
            _ => None,
        })
}

/// Bounded, de-duplicated list of mismatches.
#[derive(Default)]
struct Collector {
    kept: Vec<Mismatch>,
    /// Every distinct mismatch seen, kept or not (names bounded, so this stays small next
    /// to the component it came from).
    seen: std::collections::HashSet<Mismatch>,
    omitted: usize,
}

impl Collector {
    fn push(&mut self, m: Mismatch) {
        if self.seen.contains(&m) {
            return;
        }
        if self.kept.len() < MAX_MISMATCHES {
            self.kept.push(m.clone());
        } else {
            self.omitted += 1;
        }
        self.seen.insert(m);
    }
}

struct Compare<'a> {
    resolve: &'a Resolve,
    out: Collector,
    /// Named types already compared with a component type, and whether they matched.
    memo: Vec<(TypeId, wt::Type, bool)>,
    /// How many named-type comparisons found a difference so far (memoised ones included): a
    /// field or case whose difference lies inside a named type already reported is not
    /// reported again.
    named_diffs: usize,
}

impl Compare<'_> {
    /// An imported `weir:orders` instance against the world's interface.
    fn instance(
        &mut self,
        name: &str,
        expected: InterfaceId,
        engine: &Engine,
        found: &wt::ComponentInstance,
    ) {
        let iface = &self.resolve.interfaces[expected];
        for (item, ext) in found.exports(engine) {
            match ext.ty {
                ComponentItem::ComponentFunc(f) => match iface.functions.get(item) {
                    Some(function) => self.function(Some(name), function, &f),
                    None => self.out.push(Mismatch::UnknownItem {
                        interface: bounded(name),
                        item: bounded(item),
                    }),
                },
                ComponentItem::Type(ty) => match iface.types.get(item) {
                    Some(id) => {
                        self.same(&WType::Id(*id), &ty, 0);
                    }
                    None => self.out.push(Mismatch::UnknownItem {
                        interface: bounded(name),
                        item: bounded(item),
                    }),
                },
                // The contract has no resources, modules or nested instances.
                _ => self.out.push(Mismatch::UnknownItem {
                    interface: bounded(name),
                    item: bounded(item),
                }),
            }
        }
    }

    /// A function's signature.
    fn function(
        &mut self,
        interface: Option<&str>,
        expected: &Function,
        found: &wt::ComponentFunc,
    ) {
        let interface = interface.map(bounded);
        let function = expected.name.clone();
        let found_params: Vec<(&str, wt::Type)> = found.params().collect();
        if found_params.len() != expected.params.len() {
            self.out.push(Mismatch::ParamCount {
                interface: interface.clone(),
                function: function.clone(),
                expected: expected.params.iter().map(|p| p.name.clone()).collect(),
                found: found_params
                    .iter()
                    .take(MAX_MISMATCHES)
                    .map(|(n, _)| bounded(n))
                    .collect(),
            });
        }
        for (position, (param, (name, ty))) in expected.params.iter().zip(&found_params).enumerate()
        {
            if param.name != *name {
                self.out.push(Mismatch::ParamName {
                    interface: interface.clone(),
                    function: function.clone(),
                    position,
                    expected: param.name.clone(),
                    found: bounded(name),
                });
            }
            if !self.same(&param.ty, ty, 0) {
                self.out.push(Mismatch::ParamType {
                    interface: interface.clone(),
                    function: function.clone(),
                    param: param.name.clone(),
                    expected: self.show(&param.ty),
                    found: show_found(ty, 0),
                });
            }
        }
        let results: Vec<wt::Type> = found.results().collect();
        let same = match (&expected.result, results.as_slice()) {
            (None, []) => true,
            (Some(e), [f]) => self.same(e, f, 0),
            _ => false,
        };
        if !same {
            self.out.push(Mismatch::ResultType {
                interface,
                function,
                expected: expected
                    .result
                    .as_ref()
                    .map_or_else(|| "none".to_owned(), |t| self.show(t)),
                found: match results.as_slice() {
                    [] => "none".to_owned(),
                    [t] => show_found(t, 0),
                    _ => format!("{} results", results.len()),
                },
            });
        }
    }

    /// Whether `found` has the shape of `expected`; differences of named types are
    /// reported as [`Mismatch::Type`].
    fn same(&mut self, expected: &WType, found: &wt::Type, depth: usize) -> bool {
        use wt::Type as F;
        if depth > MAX_DEPTH {
            return false;
        }
        let id = match expected {
            WType::Bool => return matches!(found, F::Bool),
            WType::U8 => return matches!(found, F::U8),
            WType::U16 => return matches!(found, F::U16),
            WType::U32 => return matches!(found, F::U32),
            WType::U64 => return matches!(found, F::U64),
            WType::S8 => return matches!(found, F::S8),
            WType::S16 => return matches!(found, F::S16),
            WType::S32 => return matches!(found, F::S32),
            WType::S64 => return matches!(found, F::S64),
            WType::F32 => return matches!(found, F::Float32),
            WType::F64 => return matches!(found, F::Float64),
            WType::Char => return matches!(found, F::Char),
            WType::String => return matches!(found, F::String),
            WType::ErrorContext => return matches!(found, F::ErrorContext),
            WType::Id(id) => *id,
        };
        let def = &self.resolve.types[id];
        match &def.kind {
            TypeDefKind::Type(t) => return self.same(t, found, depth + 1),
            TypeDefKind::List(t) => {
                return matches!(found, F::List(l) if self.same(t, &l.ty(), depth + 1));
            }
            TypeDefKind::Option(t) => {
                return matches!(found, F::Option(o) if self.same(t, &o.ty(), depth + 1));
            }
            TypeDefKind::Result(r) => {
                let F::Result(f) = found else { return false };
                let ok = self.same_opt(r.ok.as_ref(), f.ok().as_ref(), depth);
                let err = self.same_opt(r.err.as_ref(), f.err().as_ref(), depth);
                return ok && err;
            }
            TypeDefKind::Tuple(t) => {
                let F::Tuple(f) = found else { return false };
                let types: Vec<wt::Type> = f.types().collect();
                return types.len() == t.types.len()
                    && t.types
                        .iter()
                        .zip(&types)
                        .all(|(e, f)| self.same(e, f, depth + 1));
            }
            TypeDefKind::Record(_)
            | TypeDefKind::Variant(_)
            | TypeDefKind::Enum(_)
            | TypeDefKind::Flags(_) => {}
            // Not used by the contract: compared by kind only.
            _ => return kind_of_found(found) == def.kind.as_str(),
        }
        if let Some((_, _, same)) = self.memo.iter().find(|(i, t, _)| *i == id && t == found) {
            if !*same {
                self.named_diffs += 1;
            }
            return *same;
        }
        let before = self.named_diffs;
        let changes = self.named(id, found, depth);
        // Differs by its own changes, or by a named type inside it (already reported).
        let same = changes.is_empty() && self.named_diffs == before;
        self.memo.push((id, found.clone(), same));
        if !same {
            self.named_diffs += 1;
        }
        let interface = match def.owner {
            TypeOwner::Interface(i) => self.resolve.interfaces[i].name.clone().unwrap_or_default(),
            _ => String::new(),
        };
        let name = def.name.clone().unwrap_or_default();
        for change in changes {
            self.out.push(Mismatch::Type {
                interface: interface.clone(),
                name: name.clone(),
                change,
            });
        }
        same
    }

    fn same_opt(&mut self, e: Option<&WType>, f: Option<&wt::Type>, depth: usize) -> bool {
        match (e, f) {
            (None, None) => true,
            (Some(e), Some(f)) => self.same(e, f, depth + 1),
            _ => false,
        }
    }

    /// The differences between the named record, variant, enum or flags `id` and `found`.
    fn named(&mut self, id: TypeId, found: &wt::Type, depth: usize) -> Vec<TypeChange> {
        use wt::Type as F;
        let kind = &self.resolve.types[id].kind;
        match (kind, found) {
            (TypeDefKind::Record(r), F::Record(f)) => {
                let expected: Vec<(&str, WType)> =
                    r.fields.iter().map(|f| (f.name.as_str(), f.ty)).collect();
                let found: Vec<(&str, Option<wt::Type>)> =
                    f.fields().map(|f| (f.name, Some(f.ty))).collect();
                self.members(&expected_members(&expected), &found, depth, true)
            }
            (TypeDefKind::Variant(v), F::Variant(f)) => {
                let expected: Vec<(&str, Option<WType>)> =
                    v.cases.iter().map(|c| (c.name.as_str(), c.ty)).collect();
                let found: Vec<(&str, Option<wt::Type>)> =
                    f.cases().map(|c| (c.name, c.ty)).collect();
                self.members(&expected, &found, depth, false)
            }
            (TypeDefKind::Enum(e), F::Enum(f)) => {
                let expected: Vec<(&str, Option<WType>)> =
                    e.cases.iter().map(|c| (c.name.as_str(), None)).collect();
                let found: Vec<(&str, Option<wt::Type>)> = f.names().map(|n| (n, None)).collect();
                self.members(&expected, &found, depth, false)
            }
            (TypeDefKind::Flags(e), F::Flags(f)) => {
                let expected: Vec<(&str, Option<WType>)> =
                    e.flags.iter().map(|c| (c.name.as_str(), None)).collect();
                let found: Vec<(&str, Option<wt::Type>)> = f.names().map(|n| (n, None)).collect();
                self.members(&expected, &found, depth, false)
            }
            _ => vec![TypeChange::Kind {
                expected: kind.as_str().to_owned(),
                found: kind_of_found(found).to_owned(),
            }],
        }
    }

    /// Fields (`fields`) or cases compared by name, then by type, then by order.
    fn members(
        &mut self,
        expected: &[(&str, Option<WType>)],
        found: &[(&str, Option<wt::Type>)],
        depth: usize,
        fields: bool,
    ) -> Vec<TypeChange> {
        let mut changes = Vec::new();
        let removed: Vec<(usize, &str)> = expected
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| !found.iter().any(|(f, _)| f == n))
            .map(|(i, (n, _))| (i, *n))
            .collect();
        let added: Vec<(usize, &str)> = found
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| !expected.iter().any(|(e, _)| e == n))
            .map(|(i, (n, _))| (i, *n))
            .collect();
        if let ([(i, e)], [(j, f)]) = (removed.as_slice(), added.as_slice())
            && i == j
        {
            changes.push(if fields {
                TypeChange::FieldRenamed {
                    expected: (*e).to_owned(),
                    found: bounded(f),
                }
            } else {
                TypeChange::CaseRenamed {
                    expected: (*e).to_owned(),
                    found: bounded(f),
                }
            });
        } else {
            for (_, e) in &removed {
                changes.push(if fields {
                    TypeChange::FieldRemoved {
                        field: (*e).to_owned(),
                    }
                } else {
                    TypeChange::CaseRemoved {
                        case: (*e).to_owned(),
                    }
                });
            }
            for (_, f) in added.iter().take(MAX_MISMATCHES) {
                changes.push(if fields {
                    TypeChange::FieldAdded { field: bounded(f) }
                } else {
                    TypeChange::CaseAdded { case: bounded(f) }
                });
            }
        }
        for (name, ty) in expected {
            let Some((_, found_ty)) = found.iter().find(|(f, _)| f == name) else {
                continue;
            };
            let before = self.named_diffs;
            let same = match (ty, found_ty) {
                (None, None) => true,
                (Some(e), Some(f)) => self.same(e, f, depth + 1),
                _ => false,
            };
            if same || self.named_diffs > before {
                continue;
            }
            let shown_expected = ty
                .as_ref()
                .map_or_else(|| "none".to_owned(), |t| self.show(t));
            let shown_found = found_ty
                .as_ref()
                .map_or_else(|| "none".to_owned(), |t| show_found(t, 0));
            changes.push(if fields {
                TypeChange::FieldType {
                    field: (*name).to_owned(),
                    expected: shown_expected,
                    found: shown_found,
                }
            } else {
                TypeChange::CasePayload {
                    case: (*name).to_owned(),
                    expected: shown_expected,
                    found: shown_found,
                }
            });
        }
        if changes.is_empty()
            && expected
                .iter()
                .map(|(n, _)| n)
                .ne(found.iter().map(|(n, _)| n))
        {
            let order = found
                .iter()
                .take(MAX_MISMATCHES)
                .map(|(n, _)| bounded(n))
                .collect();
            changes.push(if fields {
                TypeChange::FieldsReordered { found: order }
            } else {
                TypeChange::CasesReordered { found: order }
            });
        }
        changes
    }

    /// A contract type as WIT spells it.
    fn show(&self, ty: &WType) -> String {
        match ty {
            WType::Id(id) => {
                let def = &self.resolve.types[*id];
                if let Some(name) = &def.name {
                    return name.clone();
                }
                match &def.kind {
                    TypeDefKind::List(t) => format!("list<{}>", self.show(t)),
                    TypeDefKind::Option(t) => format!("option<{}>", self.show(t)),
                    TypeDefKind::Result(r) => format!(
                        "result<{}, {}>",
                        r.ok.as_ref()
                            .map_or_else(|| "_".to_owned(), |t| self.show(t)),
                        r.err
                            .as_ref()
                            .map_or_else(|| "_".to_owned(), |t| self.show(t))
                    ),
                    TypeDefKind::Tuple(t) => format!(
                        "tuple<{}>",
                        t.types
                            .iter()
                            .map(|t| self.show(t))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    TypeDefKind::Type(t) => self.show(t),
                    TypeDefKind::Handle(Handle::Own(_)) => "own".to_owned(),
                    TypeDefKind::Handle(Handle::Borrow(_)) => "borrow".to_owned(),
                    other => other.as_str().to_owned(),
                }
            }
            prim => primitive(prim).to_owned(),
        }
    }
}

fn expected_members<'a>(fields: &[(&'a str, WType)]) -> Vec<(&'a str, Option<WType>)> {
    fields.iter().map(|(n, t)| (*n, Some(*t))).collect()
}

fn primitive(ty: &WType) -> &'static str {
    match ty {
        WType::Bool => "bool",
        WType::U8 => "u8",
        WType::U16 => "u16",
        WType::U32 => "u32",
        WType::U64 => "u64",
        WType::S8 => "s8",
        WType::S16 => "s16",
        WType::S32 => "s32",
        WType::S64 => "s64",
        WType::F32 => "f32",
        WType::F64 => "f64",
        WType::Char => "char",
        WType::String => "string",
        WType::ErrorContext => "error-context",
        WType::Id(_) => "type",
    }
}

/// The kind of a component type, as WIT names kinds.
fn kind_of_found(ty: &wt::Type) -> &'static str {
    use wt::Type as F;
    match ty {
        F::Bool => "bool",
        F::S8 => "s8",
        F::U8 => "u8",
        F::S16 => "s16",
        F::U16 => "u16",
        F::S32 => "s32",
        F::U32 => "u32",
        F::S64 => "s64",
        F::U64 => "u64",
        F::Float32 => "f32",
        F::Float64 => "f64",
        F::Char => "char",
        F::String => "string",
        F::List(_) => "list",
        F::Map(_) => "map",
        F::Record(_) => "record",
        F::Tuple(_) => "tuple",
        F::Variant(_) => "variant",
        F::Enum(_) => "enum",
        F::Option(_) => "option",
        F::Result(_) => "result",
        F::Flags(_) => "flags",
        F::Own(_) => "own",
        F::Borrow(_) => "borrow",
        F::Future(_) => "future",
        F::Stream(_) => "stream",
        F::ErrorContext => "error-context",
        F::FixedLengthList(_) => "list",
    }
}

/// A component type spelled WIT-like: records, variants, enums and flags (anonymous on this
/// side) by kind; nesting cut after 3 levels.
fn show_found(ty: &wt::Type, depth: usize) -> String {
    use wt::Type as F;
    if depth >= 3 {
        return "...".to_owned();
    }
    match ty {
        F::List(l) => format!("list<{}>", show_found(&l.ty(), depth + 1)),
        F::Option(o) => format!("option<{}>", show_found(&o.ty(), depth + 1)),
        F::Result(r) => format!(
            "result<{}, {}>",
            r.ok()
                .map_or_else(|| "_".to_owned(), |t| show_found(&t, depth + 1)),
            r.err()
                .map_or_else(|| "_".to_owned(), |t| show_found(&t, depth + 1))
        ),
        F::Tuple(t) => {
            let types: Vec<String> = t
                .types()
                .take(8)
                .map(|t| show_found(&t, depth + 1))
                .collect();
            format!("tuple<{}>", types.join(", "))
        }
        other => kind_of_found(other).to_owned(),
    }
}

impl fmt::Display for Mismatch {
    /// One line; names are shown as given (callers that print to a terminal escape them).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let func = |interface: &Option<String>, function: &str| match interface {
            Some(i) => format!("function {i}#{function}"),
            None => format!("export `{function}`"),
        };
        match self {
            Mismatch::UnsupportedVersion {
                direction,
                item,
                version,
                accepted,
            } => write!(
                f,
                "{direction} {item}: {PACKAGE} version {} is not accepted (accepted: {})",
                if version.is_empty() {
                    "(none)"
                } else {
                    version
                },
                accepted.join(", ")
            ),
            Mismatch::UnknownInterface { direction, item } => write!(
                f,
                "{direction} {item}: no such interface in the host's {PACKAGE} world"
            ),
            Mismatch::MissingExport { function } => {
                write!(f, "missing export `{function}`")
            }
            Mismatch::NotAFunction { direction, item } => {
                write!(f, "{direction} {item}: not of the kind the contract has")
            }
            Mismatch::UnknownItem { interface, item } => {
                write!(f, "import {interface}: no item `{item}` in the contract")
            }
            Mismatch::ParamCount {
                interface,
                function,
                expected,
                found,
            } => write!(
                f,
                "{}: {} parameters ({}), expected {} ({})",
                func(interface, function),
                found.len(),
                found.join(", "),
                expected.len(),
                expected.join(", ")
            ),
            Mismatch::ParamName {
                interface,
                function,
                position,
                expected,
                found,
            } => write!(
                f,
                "{}: parameter {} is named `{found}`, expected `{expected}`",
                func(interface, function),
                position + 1
            ),
            Mismatch::ParamType {
                interface,
                function,
                param,
                expected,
                found,
            } => write!(
                f,
                "{}: parameter `{param}` differs: expected {expected}, found {found}",
                func(interface, function)
            ),
            Mismatch::ResultType {
                interface,
                function,
                expected,
                found,
            } => write!(
                f,
                "{}: result differs: expected {expected}, found {found}",
                func(interface, function)
            ),
            Mismatch::Type {
                interface,
                name,
                change,
            } => {
                write!(f, "type {interface}.{name}: ")?;
                match change {
                    TypeChange::Kind { expected, found } => {
                        write!(f, "is a {found}, expected a {expected}")
                    }
                    TypeChange::FieldAdded { field } => {
                        write!(f, "field `{field}` is not in the contract")
                    }
                    TypeChange::FieldRemoved { field } => write!(f, "field `{field}` is missing"),
                    TypeChange::FieldRenamed { expected, found } => {
                        write!(f, "field `{expected}` is named `{found}`")
                    }
                    TypeChange::FieldType {
                        field,
                        expected,
                        found,
                    } => write!(f, "field `{field}` has type {found}, expected {expected}"),
                    TypeChange::FieldsReordered { found } => {
                        write!(f, "fields in another order ({})", found.join(", "))
                    }
                    TypeChange::CaseAdded { case } => {
                        write!(f, "case `{case}` is not in the contract")
                    }
                    TypeChange::CaseRemoved { case } => write!(f, "case `{case}` is missing"),
                    TypeChange::CaseRenamed { expected, found } => {
                        write!(f, "case `{expected}` is named `{found}`")
                    }
                    TypeChange::CasePayload {
                        case,
                        expected,
                        found,
                    } => write!(f, "case `{case}` carries {found}, expected {expected}"),
                    TypeChange::CasesReordered { found } => {
                        write!(f, "cases in another order ({})", found.join(", "))
                    }
                }
            }
        }
    }
}

impl fmt::Display for ContractReport {
    /// The first mismatch and how many there are; `weir plugin check` lists them all.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.mismatches.len() + self.omitted;
        match self.mismatches.first() {
            None => write!(f, "compatible with {PACKAGE}@{}", self.compared_with),
            Some(first) => write!(
                f,
                "{total} mismatch{} with {PACKAGE}@{} (accepted: {}); first: {first}",
                if total == 1 { "" } else { "es" },
                self.compared_with,
                self.accepted_versions.join(", ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_version_has_its_wit_and_the_world_matches() {
        let versions: Vec<&str> = contracts().iter().map(|c| c.version).collect();
        assert_eq!(versions, ACCEPTED_VERSIONS);
        for c in contracts() {
            let pkg = c.resolve.worlds[c.world].package.expect("package");
            let name = &c.resolve.packages[pkg].name;
            assert_eq!(
                name.version.as_ref().map(ToString::to_string).as_deref(),
                Some(c.version)
            );
            assert_eq!(format!("{}:{}", name.namespace, name.name), PACKAGE);
        }
        assert_eq!(
            super::super::WORLD,
            format!("{PACKAGE}/plugin@{}", ACCEPTED_VERSIONS.last().unwrap())
        );
    }

    #[test]
    fn item_names_split_into_interface_and_version() {
        assert_eq!(
            orders_item("weir:orders/types@0.1.0"),
            Some(("types", "0.1.0"))
        );
        assert_eq!(orders_item("weir:orders/types"), Some(("types", "")));
        assert_eq!(orders_item("weir:ordersx/types@0.1.0"), None);
        assert_eq!(orders_item("wasi:cli/stdout@0.2.0"), None);
    }

    #[test]
    fn the_collector_keeps_a_bounded_deduplicated_list() {
        let mut c = Collector::default();
        for i in 0..(MAX_MISMATCHES + 10) {
            let m = Mismatch::MissingExport {
                function: format!("f{i}"),
            };
            c.push(m.clone());
            c.push(m);
        }
        assert_eq!(c.kept.len(), MAX_MISMATCHES);
        assert_eq!(c.omitted, 10);
        assert_eq!(
            bounded(&"x".repeat(200)),
            format!("{}... (72 bytes cut)", "x".repeat(128))
        );
    }
}
