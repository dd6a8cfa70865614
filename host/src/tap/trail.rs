//! A batch's trail through a processor chain: what each plugin did to each item, by the item's
//! index as the pipeline received it. Kept only while someone taps the pipeline.

use std::sync::Arc;

use crate::batch::Batch;
use crate::plugins::apply;
use crate::plugins::bindings::types;
use crate::plugins::runner::Answer;

/// For each item of a part, its index in the batch as the pipeline received it.
pub type Origin = Arc<[u32]>;

/// The origin of a batch as received: every item is itself.
pub fn received(batch: &Batch) -> Origin {
    let count = sluice_wire::views::items(batch.signal(), batch.payload()).count() as u32;
    (0..count).collect()
}

/// What a plugin did to an item.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// It dropped the item.
    Dropped,
    /// It failed on the item's batch; `passed`: the batch went on unchanged (`on_error =
    /// "pass"`), else it was dropped.
    Faulted {
        /// The fault's kind (`trap`, `deadline`, …).
        kind: &'static str,
        /// Whether `on_error` passed the batch on.
        passed: bool,
    },
    /// It set an attribute (of the item's resource when `resource`).
    Set {
        /// The key.
        key: String,
        /// Whether it was the resource's.
        resource: bool,
    },
    /// It deleted an attribute.
    Deleted {
        /// The key.
        key: String,
        /// Whether it was the resource's.
        resource: bool,
    },
    /// It renamed an attribute.
    Renamed {
        /// The old key.
        key: String,
        /// The new key.
        new_key: String,
        /// Whether it was the resource's.
        resource: bool,
    },
    /// It renamed the metric.
    RenamedMetric(String),
    /// It routed the item to a named route.
    Routed(Arc<str>),
}

impl Action {
    /// Whether the item left the pipeline here.
    pub fn drops(&self) -> bool {
        matches!(self, Action::Dropped | Action::Faulted { passed: false, .. })
    }
}

/// One plugin's action on one item.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The plugin's name.
    pub plugin: Arc<str>,
    /// What it did.
    pub action: Action,
}

/// What the plugins did to each item of one received batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trail {
    items: Vec<Vec<Step>>,
}

impl Trail {
    /// A trail for a batch of `items` items, nothing done yet.
    pub fn new(items: usize) -> Self {
        Self { items: vec![Vec::new(); items] }
    }

    /// What was done to received item `item`, in chain order.
    pub fn steps(&self, item: u32) -> &[Step] {
        self.items.get(item as usize).map_or(&[], Vec::as_slice)
    }

    fn record(&mut self, item: u32, plugin: &Arc<str>, action: Action) {
        if let Some(steps) = self.items.get_mut(item as usize) {
            steps.push(Step { plugin: plugin.clone(), action });
        }
    }

    /// Records `plugin`'s fault on a part whose items are `origin`.
    pub fn fault(&mut self, plugin: &Arc<str>, origin: &[u32], kind: &'static str, passed: bool) {
        for &item in origin {
            self.record(item, plugin, Action::Faulted { kind, passed });
        }
    }

    /// Records what `plugin`'s `answer` did to `batch`, a part whose items are `origin`, and
    /// returns the origin of each part the answer made, in the order
    /// [`apply::answer`] returns them.
    pub fn follow(
        &mut self,
        plugin: &Arc<str>,
        batch: &Batch,
        origin: &Origin,
        answer: &Answer,
    ) -> Vec<Origin> {
        match answer {
            Answer::Drop(dropped) => {
                let mut gone = vec![false; origin.len()];
                for &n in dropped {
                    if let Some(slot) = gone.get_mut(n as usize) {
                        *slot = true;
                    }
                }
                for (n, _) in gone.iter().enumerate().filter(|(_, gone)| **gone) {
                    self.record(origin[n], plugin, Action::Dropped);
                }
                let kept = origin.iter().zip(&gone).filter(|(_, gone)| !**gone).map(|(item, _)| *item);
                vec![kept.collect()]
            }
            Answer::Edit(edits) => {
                self.edits(plugin, batch, origin, edits);
                vec![origin.clone()]
            }
            Answer::Route(routing) => apply::route_order(routing, origin.len())
                .into_iter()
                .map(|route| {
                    let name = route.checked_sub(1).and_then(|i| routing.routes.get(i as usize));
                    let mut part = Vec::new();
                    for (n, &item) in origin.iter().enumerate() {
                        if routing.by_item.get(n).copied().unwrap_or(0) == route {
                            part.push(item);
                            if let Some(name) = name {
                                self.record(item, plugin, Action::Routed(Arc::from(name.as_str())));
                            }
                        }
                    }
                    Origin::from(part)
                })
                .collect(),
            Answer::Requests(_) => vec![origin.clone()],
        }
    }

    fn edits(&mut self, plugin: &Arc<str>, batch: &Batch, origin: &Origin, edits: &[types::Edit]) {
        let steps: Vec<(types::Target, Action)> = edits.iter().map(edit_step).collect();
        // Which resource each item is under, read only if an edit names a resource.
        let resource_of: Vec<u32> = if steps.iter().any(|(target, _)| is_resource(*target)) {
            sluice_wire::views::items(batch.signal(), batch.payload()).map(|i| i.resource_index).collect()
        } else {
            Vec::new()
        };
        for (target, action) in steps {
            match target {
                types::Target::Item(n) => {
                    if let Some(&item) = origin.get(n as usize) {
                        self.record(item, plugin, action);
                    }
                }
                types::Target::Resource(r) => {
                    let under = resource_of.iter().zip(origin.iter()).filter(|(resource, _)| **resource == r);
                    for (_, &item) in under {
                        self.record(item, plugin, action.clone());
                    }
                }
            }
        }
    }
}

/// What an edit targets, and the action it is on each item there.
fn edit_step(edit: &types::Edit) -> (types::Target, Action) {
    match edit {
        types::Edit::SetAttribute(set) => {
            (set.target, Action::Set { key: set.key.clone(), resource: is_resource(set.target) })
        }
        types::Edit::DeleteAttribute(delete) => {
            (delete.target, Action::Deleted { key: delete.key.clone(), resource: is_resource(delete.target) })
        }
        types::Edit::RenameAttribute(rename) => (
            rename.target,
            Action::Renamed {
                key: rename.key.clone(),
                new_key: rename.new_key.clone(),
                resource: is_resource(rename.target),
            },
        ),
        types::Edit::RenameMetric(rename) => {
            (types::Target::Item(rename.item), Action::RenamedMetric(rename.new_name.clone()))
        }
    }
}

fn is_resource(target: types::Target) -> bool {
    matches!(target, types::Target::Resource(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::spans;

    fn name() -> Arc<str> {
        Arc::from("rule")
    }

    #[test]
    fn drops_are_recorded_against_the_items_as_received() {
        let batch = spans(&["a", "b", "c"]);
        let mut trail = Trail::new(5);
        // This part is received items 1, 3 and 4 (an earlier plugin dropped 0 and 2).
        let origin: Origin = Arc::from([1, 3, 4]);
        let parts = trail.follow(&name(), &batch, &origin, &Answer::Drop(vec![1]));
        assert_eq!(parts, [Origin::from([1, 4])]);
        assert_eq!(trail.steps(3), [Step { plugin: name(), action: Action::Dropped }]);
        assert!(trail.steps(1).is_empty() && trail.steps(4).is_empty());
    }

    #[test]
    fn routes_give_each_part_its_items_in_applys_order() {
        let batch = spans(&["a", "b", "c", "d"]);
        let mut trail = Trail::new(4);
        let routing = types::Routing { routes: vec!["x".into()], by_item: vec![1, 0, 1] };
        let parts = trail.follow(&name(), &batch, &received(&batch), &Answer::Route(routing.clone()));
        // apply::route's parts come in the same order: the default route, then `x`.
        assert_eq!(parts, [Origin::from([1, 3]), Origin::from([0, 2])]);
        let applied = apply::route(&batch, &routing).expect("valid");
        assert_eq!(
            applied.iter().map(|(route, _)| route.clone()).collect::<Vec<_>>(),
            [None, Some("x".into())]
        );
        assert_eq!(trail.steps(2), [Step { plugin: name(), action: Action::Routed(Arc::from("x")) }]);
        assert!(trail.steps(1).is_empty(), "the default route is not a step");
    }

    #[test]
    fn resource_edits_reach_every_item_of_the_resource() {
        let batch = spans(&["a", "b"]);
        let mut trail = Trail::new(2);
        let set = |target| {
            types::Edit::SetAttribute(types::SetAttribute {
                target,
                key: "tenant".into(),
                value: types::Value::String("t1".into()),
                mode: types::SetMode::Upsert,
            })
        };
        let edits = vec![set(types::Target::Resource(0)), set(types::Target::Item(1))];
        trail.follow(&name(), &batch, &received(&batch), &Answer::Edit(edits));
        let on_resource = Action::Set { key: "tenant".into(), resource: true };
        assert_eq!(trail.steps(0).len(), 1);
        assert_eq!(trail.steps(0)[0].action, on_resource);
        assert_eq!(trail.steps(1).len(), 2);
        assert_eq!(trail.steps(1)[1].action, Action::Set { key: "tenant".into(), resource: false });
    }
}
