//! MovieLens converter on hand-made raw fixtures in the three layouts.

mod common;

use common::{fixture, request};
use gems_data::convert::movielens::{MovieLensLayout, MovieLensOptions, convert, detect_layout};
use gems_data::{Item, Task};

fn item(id: u64, title: &str, genres: &[&str]) -> Item {
    Item {
        id,
        title: title.to_string(),
        text: None,
        categories: genres.iter().map(|genre| genre.to_string()).collect(),
        key: None,
    }
}

fn expected_items() -> Vec<Item> {
    // Movie 50 is never rated: left out of the catalogue (and counted).
    vec![
        item(
            10,
            "Toy Story (1995)",
            &["Animation", "Children's", "Comedy"],
        ),
        item(20, "Heat (1995)", &["Action", "Crime", "Thriller"]),
        item(
            30,
            "City of Lost Children, The (1995)",
            &["Adventure", "Sci-Fi"],
        ),
        item(40, "Amélie (2001)", &["Comedy", "Romance"]),
    ]
}

#[test]
fn detects_each_layout() {
    assert_eq!(
        detect_layout(&fixture("movielens/grouplens-100k")).unwrap(),
        MovieLensLayout::GroupLens100k
    );
    assert_eq!(
        detect_layout(&fixture("movielens/grouplens-1m")).unwrap(),
        MovieLensLayout::GroupLens1m
    );
    assert!(matches!(
        detect_layout(&fixture("movielens/recbole")).unwrap(),
        MovieLensLayout::RecBole { .. }
    ));
    let error = detect_layout(&fixture("movielens"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("not a MovieLens directory"), "{error}");
}

#[test]
fn all_layouts_give_the_same_exact_requests_and_items() {
    let options = MovieLensOptions {
        search_fraction: 0.0,
        ..MovieLensOptions::default()
    };
    let expected_requests = vec![
        // User 1 rated 20 (t=978300700), 10 (…760), 30 (…1000); the first rating has no history.
        request(1, Task::Rec, &[20], None, &[10], 978300760),
        request(1, Task::Rec, &[20, 10], None, &[30], 978301000),
        request(2, Task::Rec, &[20], None, &[40], 978400050),
        request(2, Task::Rec, &[20, 40], None, &[10], 978400100),
    ];
    for (layout, name) in [
        ("grouplens-100k", "ml-100k"),
        ("grouplens-1m", "ml-1m"),
        ("recbole", "ml-1m"),
    ] {
        let converted = convert(&fixture(&format!("movielens/{layout}")), &options).unwrap();
        assert_eq!(converted.name, name, "{layout}");
        assert_eq!(converted.requests, expected_requests, "{layout}");
        assert_eq!(converted.items, expected_items(), "{layout}");
        assert!(converted.proxy_queries);
        assert_eq!(converted.report.count("ratings read"), Some(6));
        assert_eq!(
            converted
                .report
                .count("catalogue entries never referenced by a request (left out)"),
            Some(1)
        );
    }
}

#[test]
fn proxy_queries_use_the_targets_genre_and_title_words_and_are_seeded() {
    let options = MovieLensOptions {
        search_fraction: 1.0,
        ..MovieLensOptions::default()
    };
    let converted = convert(&fixture("movielens/grouplens-1m"), &options).unwrap();
    let again = convert(&fixture("movielens/grouplens-1m"), &options).unwrap();
    assert_eq!(converted.requests, again.requests);
    let items = expected_items();
    for request in &converted.requests {
        assert_eq!(request.task, Task::Search);
        assert!(request.query_is_proxy);
        let target = items
            .iter()
            .find(|item| item.id == request.targets[0])
            .unwrap();
        let query = request.query.as_deref().unwrap();
        let words: Vec<&str> = query.split(' ').collect();
        assert!(
            target
                .categories
                .iter()
                .any(|genre| genre.to_lowercase() == words[0]),
            "{query}"
        );
        assert!((2..=3).contains(&words.len()), "{query}");
        let title = target.title.to_lowercase();
        for word in &words[1..] {
            assert!(
                title.contains(word) && !["the", "of", "1995", "2001"].contains(word),
                "{query} from {title}"
            );
        }
    }
    assert!(
        converted
            .notes
            .iter()
            .any(|note| note.contains("proxies built from genres and titles"))
    );
}

#[test]
fn a_repeated_movie_row_is_counted_and_the_first_kept() {
    let directory = common::scratch_dir("movielens-repeated-movie");
    for file in ["movies.dat", "ratings.dat"] {
        let source = fixture(&format!("movielens/grouplens-1m/{file}"));
        std::fs::copy(source, directory.join(file)).unwrap();
    }
    let expected = convert(&directory, &MovieLensOptions::default()).unwrap();
    assert_eq!(
        expected
            .report
            .count("movie rows repeating a movie (the first kept)"),
        Some(0)
    );
    // The file is Latin-1, as GroupLens' are: appended as bytes.
    let mut movies = std::fs::read(directory.join("movies.dat")).unwrap();
    movies.extend_from_slice(b"10::Jumanji (1995)::Adventure|Fantasy\n");
    std::fs::write(directory.join("movies.dat"), movies).unwrap();
    let converted = convert(&directory, &MovieLensOptions::default()).unwrap();
    assert_eq!(
        converted
            .report
            .count("movie rows repeating a movie (the first kept)"),
        Some(1)
    );
    assert_eq!(converted.items, expected.items, "Toy Story stays movie 10");
}

#[test]
fn malformed_rating_names_file_line_and_field() {
    let directory = common::scratch_dir("movielens-malformed");
    std::fs::copy(
        fixture("movielens/grouplens-1m/movies.dat"),
        directory.join("movies.dat"),
    )
    .unwrap();
    std::fs::write(
        directory.join("ratings.dat"),
        "1::10::5::978300760\n1::20::x::978300700\n",
    )
    .unwrap();
    let error = convert(&directory, &MovieLensOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.ends_with("ratings.dat:2: field \"rating\": expected a number, got \"x\""),
        "{error}"
    );
}

#[test]
fn recbole_tokens_of_any_text_are_numbered_and_kept_as_keys() {
    // Item tokens `1m_10`, `Heat (1995)`, `007`, `40`; user tokens `ann` and `1`.
    let options = MovieLensOptions {
        search_fraction: 0.0,
        ..MovieLensOptions::default()
    };
    let converted = convert(&fixture("movielens/recbole-tokens"), &options).unwrap();
    assert_eq!(converted.name, "ml-1m-cross");
    let keyed = |id: u64, title: &str, genres: &[&str], key: &str| Item {
        key: Some(key.to_string()),
        ..item(id, title, genres)
    };
    // Numbered in order of first appearance in the item file; `40` is never rated.
    assert_eq!(
        converted.items,
        vec![
            keyed(
                0,
                "Toy Story (1995)",
                &["Animation", "Children's", "Comedy"],
                "1m_10"
            ),
            keyed(
                1,
                "Heat (1995)",
                &["Action", "Crime", "Thriller"],
                "Heat (1995)"
            ),
            keyed(
                2,
                "City of Lost Children, The (1995)",
                &["Adventure", "Sci-Fi"],
                "007"
            ),
        ]
    );
    let with_key = |request: gems_data::Request| gems_data::Request {
        user_key: Some("ann".to_string()),
        ..request
    };
    // `ann` rated Heat (…700), Toy Story (…760), City of Lost Children (…1000); user `1` (id 1)
    // has a single rating, so no request.
    assert_eq!(
        converted.requests,
        vec![
            with_key(request(0, Task::Rec, &[1], None, &[0], 978300760)),
            with_key(request(0, Task::Rec, &[1, 0], None, &[2], 978301000)),
        ]
    );
    assert!(
        converted
            .notes
            .iter()
            .any(|note| note.starts_with("item ids: the item tokens are not all integers"))
    );
    assert!(
        converted
            .notes
            .iter()
            .any(|note| note.starts_with("user ids: the user tokens are not all integers"))
    );

    // The keys survive writing and reading the unified format.
    let directory = common::scratch_dir("movielens-token-keys");
    gems_data::dataset::write_converted(&converted, &directory).unwrap();
    let (loaded, _) =
        gems_data::dataset::load_converted(&directory, gems_data::ValidationPolicy::Strict)
            .unwrap();
    assert_eq!(loaded.items, converted.items);
    assert_eq!(loaded.requests, converted.requests);
}

#[test]
fn an_empty_recbole_token_names_file_line_and_field() {
    let directory = common::fixture_copy("movielens/recbole-tokens", "movielens-empty-token");
    let path = directory.join("ml-1m-cross.inter");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text} \t007\t4\t978300900\n")).unwrap();
    let error = convert(&directory, &MovieLensOptions::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        format!(
            "{}:6: field \"user_id\": an empty token; every user and item needs an id",
            path.display()
        )
    );
}
