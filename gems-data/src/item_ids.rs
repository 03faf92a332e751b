//! Item identifiers: what the model generates for an item, and the new tokens it needs.
//!
//! Three schemes ([`ItemIdScheme`]):
//! - **Atomic** (the reference's choice): one new token per item, `<item_N>` with N the item id.
//! - **Semantic** (TIGER-style): hierarchical k-means over item embeddings gives each item a short
//!   code path, one token per level (`<a_12><b_3><c_40>`), plus a collision level (`<d_0>`, `<d_1>`,
//!   ...) that numbers items whose paths coincide, so every identifier has `levels + 1` tokens and
//!   is unique. Each level has at most `codebook_size` codes (256 by default); by default a level
//!   uses `ceil(n^(1/levels))` codes so that small catalogues still share prefixes. Embeddings come
//!   from the caller (the CLI's encoder) or, by default, from [`crate::text_embedding`].
//! - **Title**: the item's title, whitespace-normalised; duplicate titles get ` (2)`, ` (3)`, ...
//!   (skipping any suffix that is another item's title); an empty title becomes `item N`.
//!
//! Every scheme guarantees unique identifiers (tested). Because one identifier can be a prefix of
//! another in the Title scheme, decoding must treat end-of-sequence as part of the identifier.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::kmeans::{KMeansOptions, kmeans};
use crate::schema::{Item, ItemId};
use crate::text_embedding::{DEFAULT_TEXT_EMBEDDING_DIMENSIONS, item_text_embeddings};

/// Options of semantic identifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SemanticIdOptions {
    /// Code levels before the collision level (at most 25).
    pub levels: usize,
    /// Upper bound on codes per level.
    pub codebook_size: usize,
    /// Codes per level; `None` picks `ceil(n^(1/levels))` capped by `codebook_size`.
    pub codes_per_level: Option<usize>,
    /// Seed of the k-means initialisations.
    pub seed: u64,
    /// Upper bound on Lloyd iterations per k-means run.
    pub max_iterations: usize,
}

impl Default for SemanticIdOptions {
    fn default() -> Self {
        SemanticIdOptions {
            levels: 3,
            codebook_size: 256,
            codes_per_level: None,
            seed: 42,
            max_iterations: 50,
        }
    }
}

/// Which identifiers to build.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "scheme")]
pub enum ItemIdScheme {
    /// `<item_N>`, one new token per item.
    Atomic,
    /// Hierarchical k-means codes plus a collision level.
    Semantic(SemanticIdOptions),
    /// The title text.
    Title,
}

/// The identifier of every catalogue item, the reverse map, and the tokens to add to the tokenizer.
#[derive(Clone, Debug, PartialEq)]
pub struct ItemIdentifiers {
    scheme: ItemIdScheme,
    items: Vec<ItemId>,
    identifiers: Vec<String>,
    new_tokens: Vec<String>,
    position_of_item: HashMap<ItemId, usize>,
    position_of_identifier: HashMap<String, usize>,
}

#[derive(Serialize, Deserialize)]
struct IdentifierFile {
    scheme: ItemIdScheme,
    new_tokens: Vec<String>,
    items: Vec<IdentifierEntry>,
}

#[derive(Serialize, Deserialize)]
struct IdentifierEntry {
    item: ItemId,
    identifier: String,
}

impl ItemIdentifiers {
    /// Builds the identifiers of `items` with `scheme`; semantic identifiers use the default text
    /// embedding.
    pub fn build(items: &[Item], scheme: &ItemIdScheme) -> Result<Self> {
        match scheme {
            ItemIdScheme::Atomic => {
                let identifiers: Vec<String> = items
                    .iter()
                    .map(|item| format!("<item_{}>", item.id))
                    .collect();
                let new_tokens = identifiers.clone();
                Self::assemble(scheme.clone(), items, identifiers, new_tokens)
            }
            ItemIdScheme::Title => {
                Self::assemble(scheme.clone(), items, title_identifiers(items), Vec::new())
            }
            ItemIdScheme::Semantic(options) => {
                let embeddings = item_text_embeddings(items, DEFAULT_TEXT_EMBEDDING_DIMENSIONS);
                Self::semantic(items, &embeddings, options)
            }
        }
    }

    /// Semantic identifiers from caller-supplied embeddings (one per item, same order, same width).
    pub fn semantic(
        items: &[Item],
        embeddings: &[Vec<f32>],
        options: &SemanticIdOptions,
    ) -> Result<Self> {
        if embeddings.len() != items.len() {
            return Err(DataError::InvalidOption(format!(
                "semantic identifiers need one embedding per item: {} items, {} embeddings",
                items.len(),
                embeddings.len()
            )));
        }
        let width = embeddings.first().map_or(0, Vec::len);
        if let Some(position) = embeddings
            .iter()
            .position(|embedding| embedding.len() != width)
        {
            return Err(DataError::InvalidOption(format!(
                "embedding of item {} has {} values, the first has {}",
                items[position].id,
                embeddings[position].len(),
                width
            )));
        }
        if options.levels == 0 || options.levels > 25 || options.codebook_size < 2 {
            return Err(DataError::InvalidOption(format!(
                "semantic identifiers need 1 to 25 levels and a codebook of at least 2 codes (got {} levels, {} codes)",
                options.levels, options.codebook_size
            )));
        }
        let codes = semantic_codes(embeddings, options);
        let mut tokens_in_use: BTreeSet<(usize, usize)> = BTreeSet::new();
        let identifiers = codes
            .iter()
            .map(|path| {
                let mut identifier = String::new();
                for (level, code) in path.iter().enumerate() {
                    tokens_in_use.insert((level, *code));
                    identifier.push_str(&semantic_token(level, *code));
                }
                identifier
            })
            .collect();
        let new_tokens = tokens_in_use
            .into_iter()
            .map(|(level, code)| semantic_token(level, code))
            .collect();
        Self::assemble(
            ItemIdScheme::Semantic(*options),
            items,
            identifiers,
            new_tokens,
        )
    }

    fn assemble(
        scheme: ItemIdScheme,
        items: &[Item],
        identifiers: Vec<String>,
        new_tokens: Vec<String>,
    ) -> Result<Self> {
        let mut position_of_item = HashMap::with_capacity(items.len());
        let mut position_of_identifier = HashMap::with_capacity(items.len());
        for (position, (item, identifier)) in items.iter().zip(&identifiers).enumerate() {
            if position_of_item.insert(item.id, position).is_some() {
                return Err(DataError::InvalidOption(format!(
                    "item {} appears twice in the catalogue; validate the data first",
                    item.id
                )));
            }
            if let Some(previous) = position_of_identifier.insert(identifier.clone(), position) {
                return Err(DataError::InvalidOption(format!(
                    "items {} and {} got the same identifier {identifier:?}",
                    items[previous].id, item.id
                )));
            }
        }
        Ok(ItemIdentifiers {
            scheme,
            items: items.iter().map(|item| item.id).collect(),
            identifiers,
            new_tokens,
            position_of_item,
            position_of_identifier,
        })
    }

    /// The scheme used.
    pub fn scheme(&self) -> &ItemIdScheme {
        &self.scheme
    }

    /// The identifier of `item`, if it is in the catalogue.
    pub fn identifier(&self, item: ItemId) -> Option<&str> {
        self.position_of_item
            .get(&item)
            .map(|&position| self.identifiers[position].as_str())
    }

    /// The item whose identifier is `identifier`.
    pub fn item(&self, identifier: &str) -> Option<ItemId> {
        self.position_of_identifier
            .get(identifier)
            .map(|&position| self.items[position])
    }

    /// Tokens that the tokenizer and the model's embeddings must gain (empty for titles).
    pub fn new_tokens(&self) -> &[String] {
        &self.new_tokens
    }

    /// `(item, identifier)` pairs in catalogue order.
    pub fn iter(&self) -> impl Iterator<Item = (ItemId, &str)> {
        self.items
            .iter()
            .copied()
            .zip(self.identifiers.iter().map(String::as_str))
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True for an empty catalogue.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Writes the identifiers as JSON (`{"scheme": ..., "new_tokens": [...], "items": [{"item", "identifier"}]}`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let file = IdentifierFile {
            scheme: self.scheme.clone(),
            new_tokens: self.new_tokens.clone(),
            items: self
                .iter()
                .map(|(item, identifier)| IdentifierEntry {
                    item,
                    identifier: identifier.to_string(),
                })
                .collect(),
        };
        let text = serde_json::to_string(&file).expect("identifiers always serialize");
        std::fs::write(path, text).map_err(|source| DataError::io(path, "write", source))
    }

    /// Reads identifiers written by [`Self::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|source| DataError::io(path, "read", source))?;
        let file: IdentifierFile = serde_json::from_str(&text).map_err(|error| {
            DataError::record(
                &path.display().to_string(),
                error.line(),
                None,
                format!("{error}; the file must be written by ItemIdentifiers::save"),
            )
        })?;
        let items: Vec<Item> = file
            .items
            .iter()
            .map(|entry| Item {
                id: entry.item,
                title: String::new(),
                text: None,
                categories: Vec::new(),
                key: None,
            })
            .collect();
        let identifiers = file
            .items
            .into_iter()
            .map(|entry| entry.identifier)
            .collect();
        Self::assemble(file.scheme, &items, identifiers, file.new_tokens)
    }
}

fn semantic_token(level: usize, code: usize) -> String {
    format!("<{}_{code}>", (b'a' + level as u8) as char)
}

fn title_identifiers(items: &[Item]) -> Vec<String> {
    let normalised: Vec<String> = items
        .iter()
        .map(|item| {
            let title = item.title.split_whitespace().collect::<Vec<_>>().join(" ");
            if title.is_empty() {
                format!("item {}", item.id)
            } else {
                title
            }
        })
        .collect();
    let raw_titles: HashSet<&str> = normalised.iter().map(String::as_str).collect();
    let mut assigned: HashSet<String> = HashSet::with_capacity(items.len());
    let mut identifiers = Vec::with_capacity(items.len());
    for title in &normalised {
        let mut identifier = title.clone();
        let mut suffix = 2;
        while assigned.contains(&identifier)
            || (identifier != *title && raw_titles.contains(identifier.as_str()))
        {
            identifier = format!("{title} ({suffix})");
            suffix += 1;
        }
        assigned.insert(identifier.clone());
        identifiers.push(identifier);
    }
    identifiers
}

/// Code path (levels codes + collision code) of every item.
fn semantic_codes(embeddings: &[Vec<f32>], options: &SemanticIdOptions) -> Vec<Vec<usize>> {
    let count = embeddings.len();
    let per_level = options
        .codes_per_level
        .unwrap_or_else(|| (count as f64).powf(1.0 / options.levels as f64).ceil() as usize)
        .clamp(2, options.codebook_size);
    let mut codes = vec![Vec::with_capacity(options.levels + 1); count];
    let mut run = 0u64;
    // Breadth-first over the cluster tree: (members, level).
    let mut pending: Vec<(Vec<usize>, usize)> = vec![((0..count).collect(), 0)];
    while let Some((members, level)) = pending.pop() {
        if level == options.levels || members.is_empty() {
            continue;
        }
        let points: Vec<&[f32]> = members
            .iter()
            .map(|&index| embeddings[index].as_slice())
            .collect();
        run += 1;
        let clustering = kmeans(
            &points,
            &KMeansOptions {
                clusters: per_level,
                max_iterations: options.max_iterations,
                seed: options
                    .seed
                    .wrapping_add(run.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            },
        );
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); clustering.centroids.len()];
        for (&member, &cluster) in members.iter().zip(&clustering.assignments) {
            codes[member].push(cluster);
            children[cluster].push(member);
        }
        for child in children.into_iter().rev() {
            pending.push((child, level + 1));
        }
    }
    // Collision level: number the items sharing a full path, in catalogue order.
    let mut seen: HashMap<Vec<usize>, usize> = HashMap::new();
    for path in codes.iter_mut() {
        let counter = seen.entry(path.clone()).or_insert(0);
        path.push(*counter);
        *counter += 1;
    }
    codes
}
