//! Properties of the command table, on any argument list: `lookup`, `classify` and `keys` never
//! panic, `keys` only hands back arguments it was given (in order, never the command name), and
//! the answers do not depend on the case of the name.
//!
//! CI runs 256 cases per property (proptest's default). A longer run:
//! `PROPTEST_CASES=100000 cargo test -p redis-retry-runtime --release --test proptest_commands`.

mod strategies;

use proptest::prelude::*;
use redis_retry_runtime::commands::{self, Access, KeySpec};
use strategies::{arg_list, mixed_case};

/// Positions in `args` of the slices `keys` returned: each must be one of the arguments
/// themselves (same address and length), not a copy or a sub-slice, and they come in order.
fn key_positions(args: &[&[u8]], keys: &[&[u8]]) -> Result<Vec<usize>, TestCaseError> {
    let mut positions = Vec::with_capacity(keys.len());
    let mut from = 0;
    for key in keys {
        // Empty slices may share a dangling address; taking the next match keeps them apart.
        let found = args
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, a)| std::ptr::eq(a.as_ptr(), key.as_ptr()) && a.len() == key.len())
            .map(|(i, _)| i);
        prop_assert!(
            found.is_some(),
            "key {:?} is not an argument after position {} of {:?}",
            key,
            from,
            args
        );
        let i = found.unwrap_or_default();
        positions.push(i);
        from = i + 1;
    }
    Ok(positions)
}

proptest! {
    #[test]
    fn lookup_classify_and_keys_are_total_and_keys_are_arguments(owned in arg_list()) {
        let args: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let spec = commands::lookup(&args);
        let classified = commands::classify(&args);
        prop_assert_eq!(classified.map(|c| c.spec), spec, "classify finds what lookup finds");
        let Some(spec) = spec else { return Ok(()) };
        let keys = commands::keys(spec, &args);
        let positions = key_positions(&args, &keys)?;
        // The name, and a container's subcommand, are never keys.
        let first_key_at = if spec.name.contains(' ') { 2 } else { 1 };
        prop_assert!(positions.iter().all(|&i| i >= first_key_at), "{} keys at {:?}", spec.name, positions);
        let access = spec.access_for(&args);
        if !spec.access.is_write() {
            prop_assert_eq!(access, spec.access, "only writes are refined per invocation");
        }
        let _ = (spec.is_read(), spec.is_idempotent(), spec.is_forbidden(), access.may_write());
    }

    #[test]
    fn the_case_of_the_name_does_not_matter(owned in arg_list(), mask in any::<u64>()) {
        let args: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let mut recased = owned.clone();
        for word in recased.iter_mut().take(2) {
            if let Ok(text) = std::str::from_utf8(word) {
                *word = mixed_case(text, mask).into_bytes();
            }
        }
        let recased_args: Vec<&[u8]> = recased.iter().map(Vec::as_slice).collect();
        let spec = commands::lookup(&args);
        // Upper-casing non-ASCII text can change its length; the table is ASCII only.
        if owned.iter().take(2).all(|w| w.is_ascii()) {
            prop_assert_eq!(commands::lookup(&recased_args), spec);
        }
    }

    #[test]
    fn lookup_name_is_total(name in any::<String>()) {
        if let Some(spec) = commands::lookup_name(&name) {
            prop_assert!(spec.name.eq_ignore_ascii_case(&name.split_ascii_whitespace().collect::<Vec<_>>().join(" ")));
        }
    }

    #[test]
    fn counted_keys_never_reach_past_the_arguments(
        idx in any::<prop::sample::Index>(),
        count in prop_oneof![0usize..8, Just(usize::MAX), Just(usize::MAX / 10 + 1)],
        present in 0usize..8,
    ) {
        let counted: Vec<_> = commands::all()
            .iter()
            .filter_map(|c| match c.keys {
                KeySpec::NumKeys { numkeys_at, .. } => Some((c, numkeys_at)),
                _ => None,
            })
            .collect();
        let (spec, numkeys_at) = counted[idx.index(counted.len())];
        // The name's words, filler up to the count, the count, then `present` keys.
        let mut owned: Vec<Vec<u8>> = spec.name.split(' ').map(|w| w.as_bytes().to_vec()).collect();
        while owned.len() < numkeys_at {
            owned.push(format!("arg{}", owned.len()).into_bytes());
        }
        owned.truncate(numkeys_at);
        owned.push(count.to_string().into_bytes());
        owned.extend((0..present).map(|i| format!("k{i}").into_bytes()));
        let args: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(commands::lookup(&args), Some(spec));
        let keys = commands::keys(spec, &args);
        key_positions(&args, &keys)?;
        let dest = usize::from(matches!(spec.keys, KeySpec::NumKeys { dest: Some(_), .. }));
        prop_assert_eq!(keys.len(), dest + count.min(present), "{:?}", owned);
    }

    #[test]
    fn every_table_entry_resolves_to_itself_from_its_words(idx in any::<prop::sample::Index>(), mask in any::<u64>()) {
        let all = commands::all();
        let spec = &all[idx.index(all.len())];
        let words: Vec<Vec<u8>> = spec.name.split(' ').map(|w| mixed_case(w, mask).into_bytes()).collect();
        let args: Vec<&[u8]> = words.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(commands::lookup(&args), Some(spec));
        prop_assert_eq!(commands::lookup_name(&mixed_case(spec.name, mask)), Some(spec));
        if matches!(spec.access, Access::Write { .. }) {
            prop_assert!(spec.access.may_write());
        }
    }
}
