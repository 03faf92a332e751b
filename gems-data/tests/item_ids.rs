//! Item identifiers: uniqueness under every scheme, the reverse map, new tokens, persistence.

mod common;

use std::collections::HashSet;

use gems_data::synthetic::{SyntheticConfig, generate};
use gems_data::{Item, ItemIdScheme, ItemIdentifiers, SemanticIdOptions};
use proptest::prelude::*;

fn item(id: u64, title: &str) -> Item {
    Item {
        id,
        title: title.to_string(),
        text: None,
        categories: Vec::new(),
        key: None,
    }
}

fn assert_unique_and_reversible(identifiers: &ItemIdentifiers, items: &[Item]) {
    let distinct: HashSet<&str> = identifiers
        .iter()
        .map(|(_, identifier)| identifier)
        .collect();
    assert_eq!(distinct.len(), items.len());
    for item in items {
        let identifier = identifiers
            .identifier(item.id)
            .expect("every item has an identifier");
        assert_eq!(identifiers.item(identifier), Some(item.id));
    }
}

#[test]
fn atomic_identifiers_are_item_tokens() {
    let items = vec![item(3, "x"), item(10, "y")];
    let identifiers = ItemIdentifiers::build(&items, &ItemIdScheme::Atomic).unwrap();
    assert_eq!(identifiers.identifier(10), Some("<item_10>"));
    assert_eq!(identifiers.new_tokens(), ["<item_3>", "<item_10>"]);
    assert_unique_and_reversible(&identifiers, &items);
}

#[test]
fn duplicate_titles_get_suffixes_that_avoid_other_titles() {
    let items = vec![
        item(1, "Heat"),
        item(2, " Heat  "),
        item(3, "Heat (2)"),
        item(4, "Heat"),
        item(5, ""),
    ];
    let identifiers = ItemIdentifiers::build(&items, &ItemIdScheme::Title).unwrap();
    let names: Vec<&str> = identifiers
        .iter()
        .map(|(_, identifier)| identifier)
        .collect();
    assert_eq!(
        names,
        vec!["Heat", "Heat (3)", "Heat (2)", "Heat (4)", "item 5"]
    );
    assert!(identifiers.new_tokens().is_empty());
    assert_unique_and_reversible(&identifiers, &items);
}

#[test]
fn semantic_identifiers_are_unique_fixed_length_and_share_prefixes_within_categories() {
    let data = generate(&SyntheticConfig::default()).unwrap();
    let options = SemanticIdOptions::default();
    let identifiers =
        ItemIdentifiers::build(&data.items, &ItemIdScheme::Semantic(options)).unwrap();
    assert_unique_and_reversible(&identifiers, &data.items);
    for (_, identifier) in identifiers.iter() {
        let tokens: Vec<&str> = identifier.split_inclusive('>').collect();
        assert_eq!(tokens.len(), options.levels + 1, "{identifier}");
        for (level, token) in tokens.iter().enumerate() {
            let letter = (b'a' + level as u8) as char;
            assert!(token.starts_with(&format!("<{letter}_")), "{identifier}");
            assert!(identifiers.new_tokens().iter().any(|new| new == token));
        }
    }
    // 480 items, 3 levels: 8 codes per level. Items of one category should mostly share their
    // first code (the text embedding includes the category).
    let mut agreeing = 0;
    let mut pairs = 0;
    for left in &data.items {
        for right in &data.items {
            if left.id < right.id && left.categories == right.categories {
                pairs += 1;
                let first = |id| {
                    identifiers
                        .identifier(id)
                        .unwrap()
                        .split('>')
                        .next()
                        .unwrap()
                        .to_string()
                };
                agreeing += usize::from(first(left.id) == first(right.id));
            }
        }
    }
    assert!(
        agreeing as f64 > 0.5 * pairs as f64,
        "{agreeing} of {pairs} same-category pairs share the first code"
    );
}

#[test]
fn identical_embeddings_are_separated_by_the_collision_level() {
    let items: Vec<Item> = (0..40).map(|id| item(id, "same")).collect();
    let embeddings = vec![vec![1.0f32, 0.0, 0.0]; 40];
    let options = SemanticIdOptions {
        levels: 2,
        codebook_size: 4,
        ..SemanticIdOptions::default()
    };
    let identifiers = ItemIdentifiers::semantic(&items, &embeddings, &options).unwrap();
    assert_unique_and_reversible(&identifiers, &items);
    assert!(
        identifiers
            .iter()
            .any(|(_, identifier)| identifier.ends_with("<c_0>"))
    );
    let wrong = ItemIdentifiers::semantic(&items, &embeddings[..3], &options)
        .unwrap_err()
        .to_string();
    assert!(wrong.contains("one embedding per item"), "{wrong}");
}

#[test]
fn duplicate_item_ids_are_rejected() {
    let error = ItemIdentifiers::build(&[item(1, "a"), item(1, "b")], &ItemIdScheme::Atomic)
        .unwrap_err()
        .to_string();
    assert!(error.contains("item 1 appears twice"), "{error}");
}

#[test]
fn identifiers_save_and_load() {
    let directory = common::scratch_dir("identifiers");
    let data = generate(&SyntheticConfig {
        users: 10,
        ..SyntheticConfig::default()
    })
    .unwrap();
    let identifiers = ItemIdentifiers::build(
        &data.items,
        &ItemIdScheme::Semantic(SemanticIdOptions::default()),
    )
    .unwrap();
    let path = directory.join("identifiers.json");
    identifiers.save(&path).unwrap();
    assert_eq!(ItemIdentifiers::load(&path).unwrap(), identifiers);
}

proptest! {
    #[test]
    fn title_identifiers_are_always_unique(titles in prop::collection::vec("[ab ]{0,4}( \\([0-9]\\))?", 1..40)) {
        let items: Vec<Item> = titles.iter().enumerate().map(|(id, title)| item(id as u64, title)).collect();
        let identifiers = ItemIdentifiers::build(&items, &ItemIdScheme::Title).unwrap();
        let distinct: HashSet<&str> = identifiers.iter().map(|(_, identifier)| identifier).collect();
        prop_assert_eq!(distinct.len(), items.len());
    }

    #[test]
    fn semantic_identifiers_are_always_unique(
        points in prop::collection::vec(prop::collection::vec(-2.0f32..2.0, 3), 1..60),
        levels in 1usize..4,
        seed in 0u64..100,
    ) {
        let items: Vec<Item> = (0..points.len() as u64).map(|id| item(id, "x")).collect();
        let options = SemanticIdOptions { levels, codebook_size: 3, seed, ..SemanticIdOptions::default() };
        let identifiers = ItemIdentifiers::semantic(&items, &points, &options).unwrap();
        let distinct: HashSet<&str> = identifiers.iter().map(|(_, identifier)| identifier).collect();
        prop_assert_eq!(distinct.len(), items.len());
    }
}
