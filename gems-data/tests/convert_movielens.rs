//! MovieLens converter on hand-made raw fixtures in the three layouts.

mod common;

use common::{fixture, request};
use gems_data::convert::movielens::{MovieLensLayout, MovieLensOptions, convert, detect_layout};
use gems_data::{Item, Task};

fn expected_items() -> Vec<Item> {
    let item = |id: u64, title: &str, genres: &[&str]| Item {
        id,
        title: title.to_string(),
        text: None,
        categories: genres.iter().map(|genre| genre.to_string()).collect(),
    };
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
