//! MovieLens ml-100k and ml-1m, in GroupLens' layout or RecBole's atomic files, with proxy search
//! queries.
//!
//! Layouts, detected from the files present in the directory:
//! - GroupLens ml-100k: `u.data` (`user \t item \t rating \t timestamp`) and `u.item`
//!   (`id|title|release date|video release date|IMDb URL|` then 19 genre flags in the order of
//!   [`ML100K_GENRES`]);
//! - GroupLens ml-1m: `ratings.dat` (`UserID::MovieID::Rating::Timestamp`) and `movies.dat`
//!   (`MovieID::Title::Genre|Genre`);
//! - RecBole: one `<name>.inter` (tab-separated, header `user_id:token item_id:token rating:float
//!   timestamp:float`) and one `<name>.item` (header `item_id:token movie_title:token_seq
//!   release_year:token genre:token_seq`, or `class:token_seq` for ml-100k; genres separated by
//!   spaces). RecBole titles lack the year; it is appended as ` (year)` so that both layouts give
//!   the same titles.
//!
//! GroupLens files are Latin-1; they are decoded as such.
//!
//! Every rating (optionally only those ≥ `min_rating`) is one interaction. A seeded draw makes a
//! fraction `search_fraction` of them search requests whose query is a **proxy** built from the
//! target: one of its genres and one or two of its title words (no stop words, no numbers), as the
//! semi-synthetic Amazon protocol of the literature does with categories. Such requests carry
//! `query_is_proxy: true`, and the manifest says so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::convert::table::TableReader;
use crate::convert::{
    ConversionReport, ConvertedDataset, FilterOptions, HistoryOptions, Interaction, apply_filters,
    keep_referenced_items, requests_from_interactions,
};
use crate::error::{DataError, Result};
use crate::schema::{Item, ItemId, Task};
use crate::text::words;

/// Genre flag order of ml-100k's `u.item` (as listed in its `u.genre`).
pub const ML100K_GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

const STOP_WORDS: [&str; 24] = [
    "the", "a", "an", "of", "and", "in", "on", "to", "for", "with", "from", "at", "by", "is", "la",
    "le", "les", "el", "de", "der", "die", "das", "il", "l",
];

/// The file layout of a MovieLens directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MovieLensLayout {
    /// `u.data` + `u.item`.
    GroupLens100k,
    /// `ratings.dat` + `movies.dat`.
    GroupLens1m,
    /// `<name>.inter` + `<name>.item`.
    RecBole {
        /// The interaction file.
        inter: PathBuf,
        /// The item file.
        item: PathBuf,
    },
}

/// Options of the MovieLens converter.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MovieLensOptions {
    /// Fraction of interactions turned into (proxy) search requests.
    pub search_fraction: f64,
    /// Seed of the task draw and the proxy queries.
    pub seed: u64,
    /// Keep only ratings at or above this value (`None`: all ratings).
    pub min_rating: Option<f64>,
    /// History building.
    pub history: HistoryOptions,
    /// Optional filters.
    pub filter: FilterOptions,
}

impl Default for MovieLensOptions {
    fn default() -> Self {
        MovieLensOptions {
            search_fraction: 0.5,
            seed: 2026,
            min_rating: None,
            history: HistoryOptions::default(),
            filter: FilterOptions::default(),
        }
    }
}

/// Finds which layout `directory` holds.
pub fn detect_layout(directory: &Path) -> Result<MovieLensLayout> {
    if directory.join("u.data").is_file() && directory.join("u.item").is_file() {
        return Ok(MovieLensLayout::GroupLens100k);
    }
    if directory.join("ratings.dat").is_file() && directory.join("movies.dat").is_file() {
        return Ok(MovieLensLayout::GroupLens1m);
    }
    let entries =
        std::fs::read_dir(directory).map_err(|source| DataError::io(directory, "list", source))?;
    let mut inter = Vec::new();
    let mut item = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        match path.extension().and_then(|extension| extension.to_str()) {
            Some("inter") => inter.push(path),
            Some("item") => item.push(path),
            _ => {}
        }
    }
    if inter.len() == 1 && item.len() == 1 {
        return Ok(MovieLensLayout::RecBole {
            inter: inter.remove(0),
            item: item.remove(0),
        });
    }
    Err(DataError::file(
        &directory.display().to_string(),
        "not a MovieLens directory: expected u.data + u.item (GroupLens ml-100k), ratings.dat + movies.dat (GroupLens ml-1m), or exactly one <name>.inter + <name>.item (RecBole)",
    ))
}

struct Rating {
    user: u64,
    item: ItemId,
    rating: f64,
    time_seconds: i64,
}

struct Movie {
    title: String,
    genres: Vec<String>,
}

/// Converts the MovieLens directory `directory`.
pub fn convert(directory: &Path, options: &MovieLensOptions) -> Result<ConvertedDataset> {
    let layout = detect_layout(directory)?;
    let (name, ratings, movies) = match &layout {
        MovieLensLayout::GroupLens100k => (
            "ml-100k".to_string(),
            read_grouplens_ratings(&directory.join("u.data"), "\t")?,
            read_ml100k_items(&directory.join("u.item"))?,
        ),
        MovieLensLayout::GroupLens1m => (
            "ml-1m".to_string(),
            read_grouplens_ratings(&directory.join("ratings.dat"), "::")?,
            read_ml1m_movies(&directory.join("movies.dat"))?,
        ),
        MovieLensLayout::RecBole { inter, item } => {
            let name = inter
                .file_stem()
                .and_then(|stem| stem.to_str())
                .unwrap_or("movielens")
                .to_string();
            (
                name,
                read_recbole_ratings(inter)?,
                read_recbole_items(item)?,
            )
        }
    };
    let mut report = ConversionReport::default();
    report.add("ratings read", ratings.len());
    let before = ratings.len();
    let ratings: Vec<Rating> = match options.min_rating {
        Some(threshold) => ratings
            .into_iter()
            .filter(|rating| rating.rating >= threshold)
            .collect(),
        None => ratings,
    };
    report.add(
        format!(
            "ratings below min_rating {:?} (left out)",
            options.min_rating
        ),
        before - ratings.len(),
    );
    let before = ratings.len();
    let mut ratings: Vec<Rating> = ratings
        .into_iter()
        .filter(|rating| movies.contains_key(&rating.item))
        .collect();
    report.add(
        "ratings of movies missing from the movie file (left out)",
        before - ratings.len(),
    );
    ratings.sort_by_key(|rating| (rating.user, rating.time_seconds));

    let mut generator = ChaCha8Rng::seed_from_u64(options.seed);
    let interactions: Vec<Interaction> = ratings
        .iter()
        .map(|rating| {
            let is_search = generator.random_bool(options.search_fraction.clamp(0.0, 1.0));
            let query = is_search.then(|| proxy_query(&movies[&rating.item], &mut generator));
            Interaction {
                user: rating.user,
                time_ms: rating.time_seconds * 1000,
                task: if is_search { Task::Search } else { Task::Rec },
                targets: vec![rating.item],
                query,
                query_is_proxy: is_search,
            }
        })
        .collect();
    let requests = requests_from_interactions(interactions, options.history, &mut report);
    let requests = apply_filters(requests, &options.filter, &mut report);
    let mut items: Vec<Item> = movies
        .into_iter()
        .map(|(id, movie)| Item {
            id,
            title: movie.title,
            text: None,
            categories: movie.genres,
        })
        .collect();
    items.sort_by_key(|item| item.id);
    let items = keep_referenced_items(items, &requests, &mut report);
    Ok(ConvertedDataset {
        name,
        source: format!("MovieLens {layout:?} at {}, {options:?}", directory.display()),
        items,
        requests,
        proxy_queries: true,
        notes: vec![
            "queries are proxies built from genres and titles: each search query is one genre of the target plus one or two words of its title (seeded), not a query a user typed; every such request has query_is_proxy = true".to_string(),
            format!("a fraction {} of the ratings became search requests, the rest recommendation requests (seed {})", options.search_fraction, options.seed),
        ],
        report,
    })
}

fn proxy_query(movie: &Movie, generator: &mut ChaCha8Rng) -> String {
    let mut title_words: Vec<String> = words(&movie.title)
        .into_iter()
        .filter(|word| {
            word.chars().count() >= 3
                && !word.chars().all(|c| c.is_ascii_digit())
                && !STOP_WORDS.contains(&word.as_str())
        })
        .collect();
    title_words.dedup();
    title_words.shuffle(generator);
    title_words.truncate(generator.random_range(1..=2));
    let mut parts: Vec<String> = Vec::new();
    if let Some(genre) = movie.genres.choose(generator) {
        parts.push(genre.to_lowercase());
    }
    parts.extend(title_words);
    if parts.is_empty() {
        return movie.title.to_lowercase();
    }
    parts.join(" ")
}

fn read_grouplens_ratings(path: &Path, delimiter: &str) -> Result<Vec<Rating>> {
    let mut reader = TableReader::open(path, delimiter, None)?;
    let mut ratings = Vec::new();
    while let Some(row) = reader.next_row()? {
        ratings.push(Rating {
            user: row.id(0, "user")?,
            item: row.id(1, "item")?,
            rating: row.parse(2, "rating", "a number")?,
            time_seconds: row.parse(3, "timestamp", "an integer Unix time")?,
        });
    }
    Ok(ratings)
}

fn read_ml100k_items(path: &Path) -> Result<HashMap<ItemId, Movie>> {
    let mut reader = TableReader::open(path, "|", None)?;
    let mut movies = HashMap::new();
    while let Some(row) = reader.next_row()? {
        let id = row.id(0, "movie id")?;
        if row.len() < 5 + ML100K_GENRES.len() {
            return Err(row.error(
                "genres",
                format!(
                    "expected {} fields (5 + 19 genre flags), got {}",
                    5 + ML100K_GENRES.len(),
                    row.len()
                ),
            ));
        }
        let mut genres = Vec::new();
        for (offset, genre) in ML100K_GENRES.iter().enumerate() {
            if row.text(5 + offset, genre)?.trim() == "1" {
                genres.push(genre.to_string());
            }
        }
        movies.insert(
            id,
            Movie {
                title: row.text(1, "title")?.trim().to_string(),
                genres,
            },
        );
    }
    Ok(movies)
}

fn read_ml1m_movies(path: &Path) -> Result<HashMap<ItemId, Movie>> {
    let mut reader = TableReader::open(path, "::", None)?;
    let mut movies = HashMap::new();
    while let Some(row) = reader.next_row()? {
        let genres = row
            .text(2, "genres")?
            .split('|')
            .filter(|genre| !genre.is_empty())
            .map(str::to_string)
            .collect();
        movies.insert(
            row.id(0, "movie id")?,
            Movie {
                title: row.text(1, "title")?.trim().to_string(),
                genres,
            },
        );
    }
    Ok(movies)
}

fn read_recbole_ratings(path: &Path) -> Result<Vec<Rating>> {
    let mut reader = TableReader::open(path, "\t", Some('"'))?;
    let header = reader.header()?;
    let (user, item, rating, timestamp) = (
        header.require("user_id")?,
        header.require("item_id")?,
        header.find("rating"),
        header.require("timestamp")?,
    );
    let mut ratings = Vec::new();
    while let Some(row) = reader.next_row()? {
        ratings.push(Rating {
            user: row.id(user, "user_id")?,
            item: row.id(item, "item_id")?,
            rating: match rating {
                Some(column) => row.parse(column, "rating", "a number")?,
                None => 1.0,
            },
            time_seconds: row.parse::<f64>(timestamp, "timestamp", "a Unix time")? as i64,
        });
    }
    Ok(ratings)
}

fn read_recbole_items(path: &Path) -> Result<HashMap<ItemId, Movie>> {
    let mut reader = TableReader::open(path, "\t", Some('"'))?;
    let header = reader.header()?;
    let id = header.require("item_id")?;
    let title = header.require("movie_title")?;
    let year = header.find("release_year");
    let genre = header.find("genre").or_else(|| header.find("class"));
    let mut movies = HashMap::new();
    while let Some(row) = reader.next_row()? {
        let mut text = row.text(title, "movie_title")?.trim().to_string();
        if let Some(column) = year {
            let year = row.text(column, "release_year")?.trim();
            if !year.is_empty() {
                text = format!("{text} ({year})");
            }
        }
        let genres = match genre {
            Some(column) => row
                .text(column, "genre")?
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            None => Vec::new(),
        };
        movies.insert(
            row.id(id, "item_id")?,
            Movie {
                title: text,
                genres,
            },
        );
    }
    Ok(movies)
}
