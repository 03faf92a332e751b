//! Prompts, the self-trained tokenizer, and batching for both model layouts.

mod common;

use gems_data::batch::{
    BatchOptions, IGNORE_INDEX, PaddingSide, PromptEncoder, TextEncoder, collate_prompts,
    collate_training, identifier_token_ids, training_targets,
};
use gems_data::prompt::{REFERENCE_REC_TEMPLATE, REFERENCE_SEARCH_TEMPLATE};
use gems_data::tokenizer::{
    SpecialTokenIds, WordLevelOptions, save_tokenizer, tokenizer_corpus, train_word_level,
};
use gems_data::{Item, ItemIdScheme, ItemIdentifiers, PromptTemplates, Request, Task};

fn catalogue() -> Vec<Item> {
    (1..=30)
        .map(|id| Item {
            id,
            title: format!("blue lamp number {id}"),
            text: None,
            categories: vec!["office".into()],
            key: None,
        })
        .collect()
}

fn search_request(history: Vec<u64>) -> Request {
    Request {
        user: 7,
        task: Task::Search,
        history,
        query: Some("Blue lamp".to_string()),
        query_is_proxy: false,
        targets: vec![3],
        negatives: Vec::new(),
        timestamp: 0,
        user_key: None,
    }
}

fn rec_request(history: Vec<u64>, targets: Vec<u64>) -> Request {
    Request {
        task: Task::Rec,
        query: None,
        targets,
        ..search_request(history)
    }
}

#[test]
fn reference_wording_and_last_twenty_items() {
    let items = catalogue();
    let identifiers = ItemIdentifiers::build(&items, &ItemIdScheme::Atomic).unwrap();
    let templates = PromptTemplates::default();
    let rec = templates
        .render(&rec_request(vec![1, 2], vec![3]), &identifiers)
        .unwrap();
    assert_eq!(
        rec,
        "Below is the user's interaction history: <item_1> <item_2>. Please recommend the next item the user is likely to click."
    );
    let search = templates
        .render(&search_request((1..=25).collect()), &identifiers)
        .unwrap();
    let expected_history: Vec<String> = (6..=25).map(|id| format!("<item_{id}>")).collect();
    assert_eq!(
        search,
        format!(
            "Below is the user's interaction history: {}. The user's search query is: Blue lamp. Please predict the next item the user might click.",
            expected_history.join(" ")
        )
    );
    assert_eq!(templates.template(Task::Rec), REFERENCE_REC_TEMPLATE);
    assert_eq!(templates.template(Task::Search), REFERENCE_SEARCH_TEMPLATE);
}

#[test]
fn custom_templates_are_checked() {
    let custom = PromptTemplates::new(
        "History: {history}. Next?",
        "History: {history}. Query: {query}.",
        2,
    )
    .unwrap();
    let items = catalogue();
    let identifiers = ItemIdentifiers::build(&items, &ItemIdScheme::Title).unwrap();
    assert_eq!(
        custom
            .render(&search_request(vec![1, 2, 3]), &identifiers)
            .unwrap(),
        "History: blue lamp number 2 blue lamp number 3. Query: Blue lamp."
    );
    let missing_query = PromptTemplates::new("{history}", "{history} only", 20)
        .unwrap_err()
        .to_string();
    assert!(
        missing_query.contains("search prompt template must contain {query}"),
        "{missing_query}"
    );
    let unknown = PromptTemplates::new("{history} {user}", "{history} {query}", 20)
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("unknown placeholder {user}"), "{unknown}");
    let query_in_rec = PromptTemplates::new("{history} {query}", "{history} {query}", 20)
        .unwrap_err()
        .to_string();
    assert!(
        query_in_rec.contains("must not contain {query}"),
        "{query_in_rec}"
    );
}

fn trained() -> (tokenizers::Tokenizer, ItemIdentifiers, PromptTemplates) {
    let items = catalogue();
    let identifiers = ItemIdentifiers::build(&items, &ItemIdScheme::Atomic).unwrap();
    let templates = PromptTemplates::default();
    let requests = vec![search_request(vec![1, 2])];
    let corpus = tokenizer_corpus(&items, &requests, &templates);
    let tokenizer = train_word_level(&corpus, &identifiers, WordLevelOptions::default()).unwrap();
    (tokenizer, identifiers, templates)
}

#[test]
fn trained_tokenizer_has_t5_special_ids_whole_identifier_tokens_and_saves() {
    let (tokenizer, identifiers, templates) = trained();
    let special = SpecialTokenIds::of(&tokenizer).unwrap();
    assert_eq!((special.pad, special.eos, special.unk), (0, 1, 2));
    let prompt = templates
        .render(&search_request(vec![1, 2]), &identifiers)
        .unwrap();
    let ids = tokenizer.encode_text(&prompt).unwrap();
    assert!(
        !ids.contains(&special.unk),
        "every prompt word is in the vocabulary: {ids:?}"
    );
    let item_2 = tokenizer.token_to_id("<item_2>").unwrap();
    assert!(ids.contains(&item_2), "identifiers are single tokens");
    assert_eq!(
        tokenizer.encode_text("<item_30>").unwrap(),
        vec![tokenizer.token_to_id("<item_30>").unwrap()]
    );
    assert_eq!(tokenizer.encode_text("zebra").unwrap(), vec![special.unk]);
    let decoded = tokenizer.decode(&[item_2], true).unwrap();
    assert_eq!(
        decoded, "<item_2>",
        "identifier tokens are not special: decoding shows them"
    );
    let path = common::scratch_dir("tokenizer").join("tokenizer.json");
    save_tokenizer(&tokenizer, &path).unwrap();
    let reloaded = tokenizers::Tokenizer::from_file(&path).unwrap();
    assert_eq!(reloaded.encode_text(&prompt).unwrap(), ids);
}

#[test]
fn encoder_decoder_batch_layout() {
    let (tokenizer, identifiers, templates) = trained();
    let options = BatchOptions::encoder_decoder();
    let encoder = PromptEncoder::new(&tokenizer, &templates, &identifiers, options);
    let requests = vec![
        rec_request(vec![1], vec![4, 5]),
        search_request(vec![1, 2, 3]),
    ];
    let pairs = training_targets(&requests);
    assert_eq!(
        pairs,
        vec![(0, 4), (0, 5), (1, 3)],
        "one example per target"
    );
    let examples: Vec<_> = pairs
        .iter()
        .map(|&(index, target)| encoder.encode(&requests[index], Some(target)).unwrap())
        .collect();
    let batch = collate_training(&examples, &options);
    assert_eq!(batch.batch_size, 3);
    assert_eq!(batch.tasks, vec![Task::Rec, Task::Rec, Task::Search]);
    assert_eq!(batch.rows_of(Task::Search), vec![2]);
    assert_eq!(batch.input_ids.len(), 3 * batch.input_len);
    assert_eq!(batch.labels_len, 2, "one identifier token + EOS");
    let item_4 = i64::from(tokenizer.token_to_id("<item_4>").unwrap());
    assert_eq!(batch.label_row(0), &[item_4, 1]);
    // The rec prompt is shorter: right padding with pad id 0 and mask 0; the prompt ends with EOS.
    let rec_length = examples[0].prompt.len();
    assert!(rec_length < batch.input_len);
    assert_eq!(batch.input_row(0)[rec_length - 1], 1);
    assert!(batch.input_row(0)[rec_length..].iter().all(|&id| id == 0));
    let mask = &batch.attention_mask[..batch.input_len];
    assert_eq!(mask.iter().filter(|&&bit| bit == 1).count(), rec_length);
    assert_eq!(batch.decoder_input_ids(0, 0)[..2], [0, item_4 as u32]);
}

#[test]
fn decoder_only_batch_masks_the_prompt_and_pads_on_the_chosen_side() {
    let (tokenizer, identifiers, templates) = trained();
    for padding in [PaddingSide::Left, PaddingSide::Right] {
        let options = BatchOptions::decoder_only(padding, 0, 1);
        let encoder = PromptEncoder::new(&tokenizer, &templates, &identifiers, options);
        let short = encoder
            .encode(&rec_request(vec![1], vec![4]), Some(4))
            .unwrap();
        let long = encoder
            .encode(&search_request(vec![1, 2, 3]), Some(3))
            .unwrap();
        let batch = collate_training(&[short.clone(), long.clone()], &options);
        assert_eq!(batch.labels_len, batch.input_len);
        let length = short.prompt.len() + short.target.len() + 1;
        let padding_width = batch.input_len - length;
        let (row, labels, mask) = (
            batch.input_row(0),
            batch.label_row(0),
            &batch.attention_mask[..batch.input_len],
        );
        let real = match padding {
            PaddingSide::Left => padding_width..batch.input_len,
            PaddingSide::Right => 0..length,
        };
        assert!(mask[real.clone()].iter().all(|&bit| bit == 1));
        assert_eq!(mask.iter().sum::<u32>() as usize, length);
        let real_labels = &labels[real.clone()];
        let item_4 = i64::from(tokenizer.token_to_id("<item_4>").unwrap());
        assert!(
            real_labels[..short.prompt.len()]
                .iter()
                .all(|&label| label == IGNORE_INDEX)
        );
        assert_eq!(real_labels[short.prompt.len()..], [item_4, 1]);
        assert_eq!(row[real][short.prompt.len()..], [item_4 as u32, 1]);
        assert_eq!(
            labels
                .iter()
                .filter(|&&label| label != IGNORE_INDEX)
                .count(),
            2
        );
        let prompts = collate_prompts(&[short, long], &options);
        assert_eq!(prompts.labels_len, 0);
        if padding == PaddingSide::Left {
            assert_eq!(
                *prompts.input_row(0).last().unwrap(),
                *prompts.input_row(1).last().unwrap(),
                "prompts end aligned"
            );
        }
    }
}

#[test]
fn truncation_drops_oldest_history_items_and_never_the_target() {
    let (tokenizer, identifiers, templates) = trained();
    let request = search_request((1..=20).collect());
    let unlimited = PromptEncoder::new(
        &tokenizer,
        &templates,
        &identifiers,
        BatchOptions::encoder_decoder(),
    );
    let full = unlimited.encode(&request, Some(3)).unwrap();
    assert_eq!(full.history_items_shown, 20);
    let budget = full.prompt.len() - 5;
    let options = BatchOptions {
        max_input_tokens: budget,
        ..BatchOptions::encoder_decoder()
    };
    let tight = PromptEncoder::new(&tokenizer, &templates, &identifiers, options)
        .encode(&request, Some(3))
        .unwrap();
    assert!(tight.prompt.len() <= budget);
    assert_eq!(
        tight.history_items_shown, 15,
        "each history item is one token here"
    );
    assert!(!tight.prompt_cut);
    let oldest_kept = tokenizer.token_to_id("<item_6>").unwrap();
    let dropped = tokenizer.token_to_id("<item_5>").unwrap();
    assert!(tight.prompt.contains(&oldest_kept) && !tight.prompt.contains(&dropped));
    // Decoder-only: the target is kept whole inside the budget.
    let options = BatchOptions {
        max_input_tokens: budget,
        ..BatchOptions::decoder_only(PaddingSide::Left, 0, 1)
    };
    let decoder = PromptEncoder::new(&tokenizer, &templates, &identifiers, options)
        .encode(&request, Some(3))
        .unwrap();
    assert_eq!(
        decoder.target,
        vec![tokenizer.token_to_id("<item_3>").unwrap()]
    );
    assert!(
        decoder.prompt.len() + decoder.target.len() < budget,
        "prompt + target + EOS fit the budget"
    );
    // A budget smaller than the fixed wording cuts the prompt's start, and says so.
    let options = BatchOptions {
        max_input_tokens: 8,
        ..BatchOptions::encoder_decoder()
    };
    let cut = PromptEncoder::new(&tokenizer, &templates, &identifiers, options)
        .encode(&request, Some(3))
        .unwrap();
    assert!(cut.prompt_cut && cut.prompt.len() == 8 && cut.history_items_shown == 0);
    // A decoder-only budget that cannot hold the target is an error, not a silent cut.
    let options = BatchOptions {
        max_input_tokens: 2,
        ..BatchOptions::decoder_only(PaddingSide::Left, 0, 1)
    };
    let error = PromptEncoder::new(&tokenizer, &templates, &identifiers, options)
        .encode(&request, Some(3))
        .unwrap_err();
    assert!(
        error.to_string().contains("raise max_input_tokens"),
        "{error}"
    );
}

#[test]
fn identifier_token_sequences_are_unique_or_rejected() {
    let (tokenizer, identifiers, _) = trained();
    let sequences = identifier_token_ids(&tokenizer, &identifiers).unwrap();
    assert_eq!(sequences.len(), 30);
    assert_eq!(
        sequences[4],
        (5, vec![tokenizer.token_to_id("<item_5>").unwrap()])
    );
    // Title identifiers with words the tokenizer never saw all become <unk>: ambiguous, rejected.
    let unseen = vec![
        Item {
            id: 1,
            title: "zebra".into(),
            text: None,
            categories: Vec::new(),
            key: None,
        },
        Item {
            id: 2,
            title: "okapi".into(),
            text: None,
            categories: Vec::new(),
            key: None,
        },
    ];
    let titles = ItemIdentifiers::build(&unseen, &ItemIdScheme::Title).unwrap();
    let error = identifier_token_ids(&tokenizer, &titles)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("items 1 and 2 encode to the same tokens"),
        "{error}"
    );
}
