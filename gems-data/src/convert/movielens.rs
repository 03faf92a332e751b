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
//! GroupLens files are Latin-1; they are decoded as such. RecBole's `user_id` and `item_id` are
//! `:token` fields, any non-empty text (`1m_1`, a title): integer tokens keep their value as the
//! id, otherwise tokens are numbered and kept as the item's `key` and the request's `user_key`
//! ([`crate::convert::tokens`]). Timestamps whose milliseconds do not fit 64 bits are refused.
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

use crate::convert::table::{Row, TableReader};
use crate::convert::tokens::TokenIds;
use crate::convert::{
    ConversionReport, ConvertedDataset, FilterOptions, HistoryOptions, Interaction, apply_filters,
    keep_referenced_items, requests_from_interactions, time_in_milliseconds,
};
use crate::error::{DataError, Result};
use crate::schema::{Item, Task};
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
    /// Position of the user's token.
    user: usize,
    /// Position of the item's token.
    item: usize,
    rating: f64,
    time_ms: i64,
}

struct Movie {
    title: String,
    genres: Vec<String>,
}

/// What a layout's files hold: movies and ratings by token position, and the tokens.
#[derive(Default)]
struct Tables {
    users: TokenIds,
    items: TokenIds,
    movies: HashMap<usize, Movie>,
    /// Movie-file rows of a movie already read (the first row is kept).
    repeated_movies: usize,
    ratings: Vec<Rating>,
}

impl Tables {
    /// Adds the movie of a movie-file row, unless an earlier row gave that movie.
    fn add_movie(&mut self, position: usize, movie: Movie) {
        match self.movies.entry(position) {
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(movie);
            }
            std::collections::hash_map::Entry::Occupied(_) => self.repeated_movies += 1,
        }
    }
}

/// Converts the MovieLens directory `directory`.
pub fn convert(directory: &Path, options: &MovieLensOptions) -> Result<ConvertedDataset> {
    options.history.check()?;
    let layout = detect_layout(directory)?;
    let mut tables = Tables::default();
    let name = match &layout {
        MovieLensLayout::GroupLens100k => {
            read_ml100k_items(&directory.join("u.item"), &mut tables)?;
            read_grouplens_ratings(&directory.join("u.data"), "\t", &mut tables)?;
            "ml-100k".to_string()
        }
        MovieLensLayout::GroupLens1m => {
            read_ml1m_movies(&directory.join("movies.dat"), &mut tables)?;
            read_grouplens_ratings(&directory.join("ratings.dat"), "::", &mut tables)?;
            "ml-1m".to_string()
        }
        MovieLensLayout::RecBole { inter, item } => {
            read_recbole_items(item, &mut tables)?;
            read_recbole_ratings(inter, &mut tables)?;
            inter
                .file_stem()
                .and_then(|stem| stem.to_str())
                .unwrap_or("movielens")
                .to_string()
        }
    };
    let Tables {
        users,
        items,
        movies,
        repeated_movies,
        ratings,
    } = tables;
    let (user_ids, item_ids) = (users.finish(), items.finish());
    let mut report = ConversionReport::default();
    report.add(
        "movie rows repeating a movie (the first kept)",
        repeated_movies,
    );
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
    ratings.sort_by_key(|rating| (user_ids.id(rating.user), rating.time_ms));

    let mut generator = ChaCha8Rng::seed_from_u64(options.seed);
    let interactions: Vec<Interaction> = ratings
        .iter()
        .map(|rating| {
            let is_search = generator.random_bool(options.search_fraction.clamp(0.0, 1.0));
            let query = is_search.then(|| proxy_query(&movies[&rating.item], &mut generator));
            Interaction {
                user: user_ids.id(rating.user),
                time_ms: rating.time_ms,
                task: if is_search { Task::Search } else { Task::Rec },
                targets: vec![item_ids.id(rating.item)],
                query,
                query_is_proxy: is_search,
            }
        })
        .collect();
    let requests = requests_from_interactions(interactions, options.history, &mut report)?;
    let mut requests = apply_filters(requests, &options.filter, &mut report);
    for request in &mut requests {
        request.user_key = user_ids.key_of_id(request.user);
    }
    let mut items: Vec<Item> = movies
        .into_iter()
        .map(|(position, movie)| Item {
            id: item_ids.id(position),
            title: movie.title,
            text: None,
            categories: movie.genres,
            key: item_ids.key(position),
        })
        .collect();
    items.sort_by_key(|item| item.id);
    let items = keep_referenced_items(items, &requests, &mut report);
    let mut notes = vec![
        "queries are proxies built from genres and titles: each search query is one genre of the target plus one or two words of its title (seeded), not a query a user typed; every such request has query_is_proxy = true".to_string(),
        format!("a fraction {} of the ratings became search requests, the rest recommendation requests (seed {})", options.search_fraction, options.seed),
    ];
    if item_ids.renumbered() {
        notes.push("item ids: the item tokens are not all integers, so items are numbered 0, 1, 2, ... in order of first appearance (movie file first), and each item keeps its token as `key`".to_string());
    }
    if user_ids.renumbered() {
        notes.push("user ids: the user tokens are not all integers, so users are numbered 0, 1, 2, ... in order of first appearance, and each request keeps its user's token as `user_key`".to_string());
    }
    Ok(ConvertedDataset {
        name,
        source: format!(
            "MovieLens {layout:?} at {}, {options:?}",
            directory.display()
        ),
        items,
        requests,
        proxy_queries: true,
        notes,
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

fn read_grouplens_ratings(path: &Path, delimiter: &str, tables: &mut Tables) -> Result<()> {
    let mut reader = TableReader::open(path, delimiter, None)?.latin1_expected();
    while let Some(row) = reader.next_row()? {
        let user = tables.users.intern(&row.id(0, "user")?.to_string());
        let item = tables.items.intern(&row.id(1, "item")?.to_string());
        let seconds: i64 = row.parse(3, "timestamp", "an integer Unix time")?;
        tables.ratings.push(Rating {
            user,
            item,
            rating: row.parse(2, "rating", "a number")?,
            time_ms: time_in_milliseconds(seconds as f64, 1000.0)
                .map_err(|message| row.error("timestamp", message))?,
        });
    }
    Ok(())
}

fn read_ml100k_items(path: &Path, tables: &mut Tables) -> Result<()> {
    let mut reader = TableReader::open(path, "|", None)?.latin1_expected();
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
        let movie = Movie {
            title: row.text(1, "title")?.trim().to_string(),
            genres,
        };
        let position = tables.items.intern(&id.to_string());
        tables.add_movie(position, movie);
    }
    Ok(())
}

fn read_ml1m_movies(path: &Path, tables: &mut Tables) -> Result<()> {
    let mut reader = TableReader::open(path, "::", None)?.latin1_expected();
    while let Some(row) = reader.next_row()? {
        let genres = row
            .text(2, "genres")?
            .split('|')
            .filter(|genre| !genre.is_empty())
            .map(str::to_string)
            .collect();
        let movie = Movie {
            title: row.text(1, "title")?.trim().to_string(),
            genres,
        };
        let position = tables.items.intern(&row.id(0, "movie id")?.to_string());
        tables.add_movie(position, movie);
    }
    Ok(())
}

/// A RecBole `:token` cell: any non-empty text (surrounding spaces ignored).
fn token<'a>(row: &'a Row, column: usize, name: &str) -> Result<&'a str> {
    let token = row.text(column, name)?.trim();
    if token.is_empty() {
        return Err(row.error(name, "an empty token; every user and item needs an id"));
    }
    Ok(token)
}

fn read_recbole_ratings(path: &Path, tables: &mut Tables) -> Result<()> {
    let mut reader = TableReader::open(path, "\t", Some('"'))?.latin1_expected();
    let header = reader.header()?;
    let (user, item, rating, timestamp) = (
        header.require("user_id")?,
        header.require("item_id")?,
        header.find("rating"),
        header.require("timestamp")?,
    );
    while let Some(row) = reader.next_row()? {
        let user = tables.users.intern(token(&row, user, "user_id")?);
        let item = tables.items.intern(token(&row, item, "item_id")?);
        let seconds: f64 = row.parse(timestamp, "timestamp", "a Unix time")?;
        tables.ratings.push(Rating {
            user,
            item,
            rating: match rating {
                Some(column) => row.parse(column, "rating", "a number")?,
                None => 1.0,
            },
            time_ms: time_in_milliseconds(seconds, 1000.0)
                .map_err(|message| row.error("timestamp", message))?,
        });
    }
    Ok(())
}

fn read_recbole_items(path: &Path, tables: &mut Tables) -> Result<()> {
    let mut reader = TableReader::open(path, "\t", Some('"'))?.latin1_expected();
    let header = reader.header()?;
    let id = header.require("item_id")?;
    let title = header.require("movie_title")?;
    let year = header.find("release_year");
    let genre = header.find("genre").or_else(|| header.find("class"));
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
        let position = tables.items.intern(token(&row, id, "item_id")?);
        tables.add_movie(
            position,
            Movie {
                title: text,
                genres,
            },
        );
    }
    Ok(())
}
