//! A task's commands cut into units that one Redis Cluster node can serve.
//!
//! A cluster serves a pipeline from one node: the client refuses a pipeline whose commands
//! map to different slots (`CrossSlot: Received crossed slots in pipeline`), and a node
//! refuses a command whose keys do (`CROSSSLOT`). Commands of different slots touch different
//! keys, so the order between them does not matter; the order within a slot is kept. A
//! command whose own keys span slots (`DEL a b`, `MSET a 1 b 2`) is a barrier: it is sent
//! alone, after everything before it and before everything after it, so that the cluster
//! client can split it where it knows how (DEL, UNLINK, TOUCH, EXISTS, MSET) and a node
//! refuses it where nobody can (SUNIONSTORE over slots). On a single server the units cost one
//! round trip each and change nothing else.

use redis::cluster_routing::Slot;

use crate::commands;

/// A command as its arguments, name first.
type Parts<'a> = Vec<&'a [u8]>;

/// Commands (argument lists, name first) that go to Redis together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unit<'a> {
    /// Commands whose keys all hash to one slot (`None`: that have no key), in task order.
    Slot(Option<Slot>, Vec<Parts<'a>>),
    /// One command whose keys span several slots.
    Spanning(Parts<'a>),
}

/// Cuts `commands` into units: one per slot between barriers, a barrier per spanning command.
/// A task whose keys share one slot gives one unit.
pub(crate) fn units(commands: Vec<Parts<'_>>) -> Vec<Unit<'_>> {
    let mut out = Vec::new();
    // The units since the last barrier, by slot (None: no key), in the order first seen.
    let mut segment: Vec<(Option<Slot>, Vec<Parts>)> = Vec::new();
    for parts in commands {
        let slots = key_slots(&parts);
        if slots.len() > 1 {
            out.extend(segment.drain(..).map(|(slot, group)| Unit::Slot(slot, group)));
            out.push(Unit::Spanning(parts));
            continue;
        }
        let slot = slots.first().copied();
        match segment.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, group)) => group.push(parts),
            None => segment.push((slot, vec![parts])),
        }
    }
    out.extend(segment.into_iter().map(|(slot, group)| Unit::Slot(slot, group)));
    out
}

/// The distinct slots of the command's keys, as the command table finds them.
pub(crate) fn key_slots(parts: &[&[u8]]) -> Vec<Slot> {
    match commands::lookup(parts) {
        Some(spec) => distinct_slots(commands::keys(spec, parts)),
        None => Vec::new(),
    }
}

/// The distinct slots of `keys`, in the order first seen.
pub(crate) fn distinct_slots(keys: Vec<&[u8]>) -> Vec<Slot> {
    let mut slots = Vec::with_capacity(keys.len().min(4));
    for key in keys {
        let slot = Slot::for_key(key);
        if !slots.contains(&slot) {
            slots.push(slot);
        }
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd<'a>(parts: &[&'a str]) -> Vec<&'a [u8]> {
        parts.iter().map(|p| p.as_bytes()).collect()
    }

    #[test]
    fn one_slot_is_one_unit_in_order() {
        let cmds = vec![cmd(&["SET", "{u1}:a", "1"]), cmd(&["DEL", "{u1}:b"]), cmd(&["SET", "{u1}:a", "2"])];
        assert_eq!(units(cmds.clone()), vec![Unit::Slot(Some(Slot::for_key(b"{u1}")), cmds)]);
    }

    #[test]
    fn slots_are_grouped_and_spanning_commands_are_barriers() {
        let (a1, b, a2) = (cmd(&["SET", "a", "1"]), cmd(&["SET", "b", "1"]), cmd(&["SET", "a", "2"]));
        let del = cmd(&["DEL", "a", "b"]);
        let a3 = cmd(&["SET", "a", "3"]);
        let got = units(vec![a1.clone(), b.clone(), a2.clone(), del.clone(), a3.clone()]);
        assert_eq!(
            got,
            vec![
                Unit::Slot(Some(Slot::for_key(b"a")), vec![a1, a2]),
                Unit::Slot(Some(Slot::for_key(b"b")), vec![b]),
                Unit::Spanning(del),
                Unit::Slot(Some(Slot::for_key(b"a")), vec![a3])
            ]
        );
    }

    #[test]
    fn keyless_commands_form_their_own_unit() {
        let publish = cmd(&["PUBLISH", "ch", "m"]);
        let set = cmd(&["SET", "k", "v"]);
        assert_eq!(
            units(vec![publish.clone(), set.clone()]),
            vec![Unit::Slot(None, vec![publish]), Unit::Slot(Some(Slot::for_key(b"k")), vec![set])]
        );
    }
}
