//! The seeded synthetic dataset: the project's default data, generated in code, no download.
//!
//! Structure a model can learn, and that the model-free baselines only partly capture:
//! - **Items** belong to categories (music, kitchen, camera, ...). Each has a title
//!   `"{Brand} {colour} {style} {noun}"` (the noun is one of the category's nouns), a one-sentence
//!   text, and its category. Within a category, popularity follows a Zipf law.
//! - **Users** have two or three favourite categories, a favourite colour and style. They browse in
//!   *focus episodes*: the next item stays in the current focus category with probability
//!   `focus_stay_probability`; otherwise the focus moves to another favourite (or, rarely, to a
//!   random category), and now and then a favourite is replaced by a new one, so preferences drift
//!   over time. Items of the favourite colour/style are more likely; nobody consumes an item twice.
//! - **Search** interactions (fraction `search_fraction`) often leave the focus (half of them target
//!   a random category) and come with a short query, the way people type them: the target's noun,
//!   often alone (`query_attribute_probability` adds one colour, style or brand word), each attribute
//!   replaced by a wrong word of the same kind with probability `query_noise`, the noun sometimes
//!   replaced by the category name. Queries also use everyday words the catalogue never uses
//!   (`query_alias_probability`): "couch" where titles say "sofa", "crimson" for "red".
//!
//! So the next recommended item is predictable from the recent history's category (plus
//! popularity and the user's colour/style), and the searched item from the query *together with*
//! the history: a noun alone matches several items, and only the user's remembered colour/style
//! taste tells them apart; an alias matches nothing in the item text until a model has learnt
//! it from training queries. Lexical matching (BM25) therefore gets partial credit only, and a
//! model that learns both can clear it; the tests state the margins.
//!
//! The default size (16 categories × 30 items = 480 items, 300 users, 16–32 interactions each,
//! ≈ 7 000 requests) keeps training a small T5 on two CPU cores to minutes.

use std::collections::HashSet;

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::convert::{
    ConversionReport, ConvertedDataset, HistoryOptions, Interaction, requests_from_interactions,
};
use crate::error::Result;
use crate::schema::{Item, ItemId, Task};

/// Categories and their nouns.
const CATEGORIES: [(&str, [&str; 4]); 16] = [
    ("music", ["guitar", "ukulele", "amplifier", "pedal"]),
    ("kitchen", ["pan", "kettle", "knife", "blender"]),
    ("camera", ["camera", "lens", "tripod", "flash"]),
    ("shoes", ["sneaker", "boot", "sandal", "loafer"]),
    ("books", ["novel", "cookbook", "atlas", "journal"]),
    ("garden", ["shovel", "planter", "hose", "rake"]),
    ("toys", ["puzzle", "robot", "kite", "doll"]),
    ("sports", ["racket", "ball", "helmet", "glove"]),
    ("outdoor", ["tent", "backpack", "lantern", "compass"]),
    ("beauty", ["lipstick", "perfume", "serum", "brush"]),
    ("office", ["stapler", "notebook", "lamp", "chair"]),
    ("pets", ["leash", "collar", "aquarium", "scratcher"]),
    ("jewelry", ["ring", "necklace", "bracelet", "watch"]),
    (
        "audio",
        ["headphones", "speaker", "microphone", "turntable"],
    ),
    ("bakery", ["bread", "croissant", "bagel", "muffin"]),
    ("travel", ["suitcase", "pillow", "adapter", "wallet"]),
];
/// Everyday words for each category's nouns, used in queries only (never in item text).
const NOUN_ALIASES: [[&str; 4]; 16] = [
    ["axe", "uke", "amp", "stompbox"],
    ["skillet", "boiler", "cleaver", "mixer"],
    ["cam", "optic", "stand", "strobe"],
    ["trainer", "bootie", "flipflop", "slipon"],
    ["story", "recipes", "maps", "diary"],
    ["spade", "pot", "tubing", "leafcomb"],
    ["jigsaw", "droid", "glider", "figurine"],
    ["bat", "sphere", "headgear", "mitt"],
    ["shelter", "rucksack", "torch", "navigator"],
    ["gloss", "fragrance", "elixir", "applicator"],
    ["clipper", "pad", "light", "seat"],
    ["lead", "tag", "fishtank", "scratchpost"],
    ["band", "pendant", "bangle", "timepiece"],
    ["cans", "boombox", "mic", "deck"],
    ["loaf", "crescent", "roll", "cupcake"],
    ["luggage", "cushion", "plug", "purse"],
];
const COLOURS: [&str; 10] = [
    "red", "blue", "green", "black", "white", "yellow", "purple", "orange", "grey", "pink",
];
/// Everyday words for the colours, used in queries only.
const COLOUR_ALIASES: [&str; 10] = [
    "crimson", "navy", "emerald", "jet", "ivory", "golden", "violet", "amber", "slate", "rose",
];
const STYLES: [&str; 8] = [
    "vintage", "modern", "compact", "deluxe", "classic", "rugged", "minimal", "premium",
];
const SYLLABLES: [&str; 12] = [
    "vel", "ora", "zan", "tik", "mor", "lum", "bri", "kas", "nov", "dor", "fen", "qui",
];

/// Size and behaviour of the generated data.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyntheticConfig {
    /// Seed of everything.
    pub seed: u64,
    /// Categories used (at most 16).
    pub categories: usize,
    /// Items per category.
    pub items_per_category: usize,
    /// Users.
    pub users: usize,
    /// Fewest interactions per user.
    pub min_interactions_per_user: usize,
    /// Most interactions per user.
    pub max_interactions_per_user: usize,
    /// Fraction of interactions that are searches.
    pub search_fraction: f64,
    /// Probability that the next interaction stays in the focus category.
    pub focus_stay_probability: f64,
    /// Probability that a query's attribute word is replaced by a wrong one.
    pub query_noise: f64,
    /// Probability that a query names one attribute (colour, style or brand) besides the noun.
    pub query_attribute_probability: f64,
    /// Probability that a query word has an everyday alias that the catalogue never uses.
    pub query_alias_probability: f64,
    /// How histories are stored.
    pub history: HistoryOptions,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            seed: 2026,
            categories: 16,
            items_per_category: 30,
            users: 300,
            min_interactions_per_user: 16,
            max_interactions_per_user: 32,
            search_fraction: 0.4,
            focus_stay_probability: 0.8,
            query_noise: 0.15,
            query_attribute_probability: 0.5,
            query_alias_probability: 0.5,
            history: HistoryOptions::default(),
        }
    }
}

struct SyntheticItem {
    category: usize,
    noun: &'static str,
    colour: usize,
    style: usize,
    brand: String,
    popularity: f64,
}

struct Taste {
    favourites: Vec<usize>,
    colour: usize,
    style: usize,
}

/// Generates the dataset (catalogue and unsplit requests); fails only on history options out of
/// range ([`HistoryOptions::check`]).
pub fn generate(config: &SyntheticConfig) -> Result<ConvertedDataset> {
    config.history.check()?;
    let mut generator = ChaCha8Rng::seed_from_u64(config.seed);
    let categories = config.categories.clamp(1, CATEGORIES.len());
    let catalogue = generate_items(&mut generator, categories, config.items_per_category.max(1));
    let items: Vec<Item> = catalogue
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let (category, _) = CATEGORIES[item.category];
            Item {
                id: index as ItemId,
                title: format!(
                    "{} {} {} {}",
                    item.brand, COLOURS[item.colour], STYLES[item.style], item.noun
                ),
                text: Some(format!(
                    "A {} {} {} by {}, from the {category} collection.",
                    COLOURS[item.colour], STYLES[item.style], item.noun, item.brand
                )),
                categories: vec![category.to_string()],
                key: None,
            }
        })
        .collect();
    let by_category: Vec<Vec<usize>> = (0..categories)
        .map(|category| {
            (0..catalogue.len())
                .filter(|&index| catalogue[index].category == category)
                .collect()
        })
        .collect();

    // Queries draw from their own stream, so that query settings never change who does what.
    let mut query_generator = ChaCha8Rng::seed_from_u64(config.seed ^ 0x7175_6572_7973);
    let mut interactions = Vec::new();
    for user in 0..config.users {
        let mut taste = Taste {
            favourites: {
                let mut all: Vec<usize> = (0..categories).collect();
                all.shuffle(&mut generator);
                all.truncate(generator.random_range(2..=3).min(categories));
                all
            },
            colour: generator.random_range(0..COLOURS.len()),
            style: generator.random_range(0..STYLES.len()),
        };
        let mut focus = taste.favourites[0];
        let mut consumed: HashSet<usize> = HashSet::new();
        let count = generator.random_range(
            config.min_interactions_per_user
                ..=config
                    .max_interactions_per_user
                    .max(config.min_interactions_per_user),
        );
        let mut time_seconds: i64 = 1_700_000_000 + generator.random_range(0..30 * 86_400);
        for _ in 0..count {
            time_seconds += generator.random_range(60..2 * 86_400);
            if generator.random_bool(0.05) {
                // Drift: a favourite is replaced by another category.
                let slot = generator.random_range(0..taste.favourites.len());
                taste.favourites[slot] = generator.random_range(0..categories);
            }
            if !generator.random_bool(config.focus_stay_probability) {
                focus = if generator.random_bool(0.85) {
                    *taste
                        .favourites
                        .choose(&mut generator)
                        .expect("at least one favourite")
                } else {
                    generator.random_range(0..categories)
                };
            }
            let is_search = generator.random_bool(config.search_fraction);
            let category = if is_search && generator.random_bool(0.5) {
                generator.random_range(0..categories)
            } else {
                focus
            };
            let target = pick_item(
                &mut generator,
                &catalogue,
                &by_category[category],
                &taste,
                &consumed,
            );
            consumed.insert(target);
            let query =
                is_search.then(|| make_query(&mut query_generator, &catalogue[target], config));
            interactions.push(Interaction {
                user: user as u64,
                time_ms: time_seconds * 1000,
                task: if is_search { Task::Search } else { Task::Rec },
                targets: vec![target as ItemId],
                query,
                query_is_proxy: false,
            });
        }
    }
    let mut report = ConversionReport::default();
    report.add("users generated", config.users);
    report.add("interactions generated", interactions.len());
    let requests = requests_from_interactions(interactions, config.history, &mut report)?;
    Ok(ConvertedDataset {
        name: "synthetic".to_string(),
        source: format!("gems-data synthetic generator, {config:?}"),
        items,
        requests,
        proxy_queries: false,
        notes: vec![
            "synthetic data: users browse in focus episodes over 2-3 drifting favourite categories; the next item is predictable from the recent history's category, popularity and the user's colour/style".to_string(),
            format!(
                "synthetic search queries name the target's noun (or category), with one colour/style/brand word with probability {} (wrong with probability {}), and use everyday aliases absent from the item text with probability {}",
                config.query_attribute_probability, config.query_noise, config.query_alias_probability
            ),
        ],
        report,
    })
}

fn generate_items(
    generator: &mut ChaCha8Rng,
    categories: usize,
    per_category: usize,
) -> Vec<SyntheticItem> {
    let brands: Vec<String> = {
        let mut names = Vec::new();
        for first in SYLLABLES {
            for second in SYLLABLES {
                if first != second {
                    let mut name = first.to_string();
                    name[..1].make_ascii_uppercase();
                    names.push(name + second);
                }
            }
        }
        names.shuffle(generator);
        names.truncate(24);
        names
    };
    let mut items = Vec::with_capacity(categories * per_category);
    let mut titles: HashSet<(usize, &'static str, usize, usize, usize)> = HashSet::new();
    for (category, (_, nouns)) in CATEGORIES.iter().enumerate().take(categories) {
        let mut ranks: Vec<usize> = (0..per_category).collect();
        ranks.shuffle(generator);
        for rank in ranks {
            loop {
                let noun = *nouns.choose(generator).expect("nouns");
                let colour = generator.random_range(0..COLOURS.len());
                let style = generator.random_range(0..STYLES.len());
                let brand = generator.random_range(0..brands.len());
                if titles.insert((category, noun, colour, style, brand)) {
                    items.push(SyntheticItem {
                        category,
                        noun,
                        colour,
                        style,
                        brand: brands[brand].clone(),
                        popularity: 1.0 / ((rank + 1) as f64).powf(1.0),
                    });
                    break;
                }
            }
        }
    }
    items
}

fn pick_item(
    generator: &mut ChaCha8Rng,
    catalogue: &[SyntheticItem],
    members: &[usize],
    taste: &Taste,
    consumed: &HashSet<usize>,
) -> usize {
    let mut candidates: Vec<usize> = members
        .iter()
        .copied()
        .filter(|index| !consumed.contains(index))
        .collect();
    if candidates.is_empty() {
        candidates = members.to_vec();
    }
    let weight = |index: usize| {
        let item = &catalogue[index];
        let colour = if item.colour == taste.colour {
            3.0
        } else {
            1.0
        };
        let style = if item.style == taste.style { 2.0 } else { 1.0 };
        item.popularity * colour * style
    };
    let total: f64 = candidates.iter().map(|&index| weight(index)).sum();
    let mut threshold = generator.random::<f64>() * total;
    for &index in &candidates {
        threshold -= weight(index);
        if threshold <= 0.0 {
            return index;
        }
    }
    *candidates.last().expect("non-empty")
}

fn make_query(
    generator: &mut ChaCha8Rng,
    item: &SyntheticItem,
    config: &SyntheticConfig,
) -> String {
    let alias = |generator: &mut ChaCha8Rng| generator.random_bool(config.query_alias_probability);
    let mut words: Vec<String> = Vec::new();
    if generator.random_bool(config.query_attribute_probability) {
        let wrong = generator.random_bool(config.query_noise);
        match generator.random_range(0..3) {
            0 => {
                let colour = if wrong {
                    generator.random_range(0..COLOURS.len())
                } else {
                    item.colour
                };
                let names = if alias(generator) {
                    COLOUR_ALIASES
                } else {
                    COLOURS
                };
                words.push(names[colour].to_string());
            }
            1 => {
                let style = if wrong {
                    generator.random_range(0..STYLES.len())
                } else {
                    item.style
                };
                words.push(STYLES[style].to_string());
            }
            _ => words.push(item.brand.to_lowercase()),
        }
    }
    let (category, nouns) = CATEGORIES[item.category];
    let noun = if generator.random_bool(config.query_noise / 2.0) {
        category
    } else if alias(generator) {
        let position = nouns
            .iter()
            .position(|n| *n == item.noun)
            .expect("the noun is its category's");
        NOUN_ALIASES[item.category][position]
    } else {
        item.noun
    };
    words.push(noun.to_string());
    words.join(" ")
}
