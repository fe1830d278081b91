//! `deepsynth data synth`: synthetic reading pages. Each document is a short card of "Key: value" lines in random
//! order; the question asks for one key, whose value can only be read from the page. Names, cities and colours
//! come from pools (a model can learn the kind of answer); years and codes are fresh random values (only reading
//! gets them right). `ocr` records ask for the whole card ("Free OCR."), the dense supervision that teaches reading.
//! Person cards are what the reading recipe trains on (configs/pretrain-tiny-qa.toml); ticket cards have keys such a
//! model never saw: a new kind of document, for fine-tuning it.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::Record;

const NAMES: [&str; 24] = [
    "Ada", "Bruno", "Chen", "Dana", "Emil", "Fatima", "Goran", "Hana", "Ivan", "Jade", "Kofi", "Lena", "Mateo", "Nia",
    "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Viktor", "Wen", "Yara",
];
const CITIES: [&str; 24] = [
    "Oslo", "Lima", "Pune", "Kyiv", "Rome", "Baku", "Doha", "Graz", "Hue", "Kobe", "Lyon", "Metz", "Nice", "Riga",
    "Sofia", "Turin", "Varna", "Bergen", "Cairo", "Dakar", "Fez", "Quito", "Split", "Tunis",
];
const COLOURS: [&str; 12] =
    ["red", "blue", "green", "amber", "violet", "black", "white", "grey", "teal", "pink", "brown", "gold"];
const GLYPHS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const CODE_CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// The kinds of fact a card holds: a person card's, then a ticket card's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Field {
    Name,
    City,
    Colour,
    Year,
    Code,
    Flight,
    Gate,
    Seat,
    Zone,
}

/// What a card is about: which fields it draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Card {
    /// Name, City, Colour, Year, Code.
    #[default]
    Person,
    /// Flight, Gate, Seat, Zone (always random values).
    Ticket,
}

impl Card {
    pub fn fields(self) -> &'static [Field] {
        match self {
            Card::Person => &[Field::Name, Field::City, Field::Colour, Field::Year, Field::Code],
            Card::Ticket => &[Field::Flight, Field::Gate, Field::Seat, Field::Zone],
        }
    }
}

impl Field {
    pub fn key(self) -> &'static str {
        match self {
            Field::Name => "Name",
            Field::City => "City",
            Field::Colour => "Colour",
            Field::Year => "Year",
            Field::Code => "Code",
            Field::Flight => "Flight",
            Field::Gate => "Gate",
            Field::Seat => "Seat",
            Field::Zone => "Zone",
        }
    }

    fn value(self, rng: &mut ChaCha8Rng, values: Values) -> String {
        let word = |rng: &mut ChaCha8Rng, len: std::ops::RangeInclusive<usize>, capital: bool| -> String {
            let len = rng.random_range(len);
            (0..len)
                .map(|i| {
                    let c = char::from(b'a' + rng.random_range(0..26u8));
                    if i == 0 && capital {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        };
        match (self, values) {
            (Field::Name, Values::Pools) => NAMES.choose(rng).expect("non-empty").to_string(),
            (Field::City, Values::Pools) => CITIES.choose(rng).expect("non-empty").to_string(),
            (Field::Colour, Values::Pools) => COLOURS.choose(rng).expect("non-empty").to_string(),
            (Field::Name, Values::Random) => word(rng, 3..=7, true),
            (Field::City, Values::Random) => word(rng, 4..=8, true),
            (Field::Colour, Values::Random) => word(rng, 3..=6, false),
            (Field::Year, _) => rng.random_range(1900..2030).to_string(),
            (Field::Code, _) => (0..4).map(|_| char::from(*CODE_CHARS.choose(rng).expect("non-empty"))).collect(),
            (Field::Flight, _) => {
                format!("{}{}{}", capital(rng, 26), capital(rng, 26), rng.random_range(10..10000))
            }
            (Field::Gate, _) => format!("{}{}", capital(rng, 8), rng.random_range(1..40)),
            (Field::Seat, _) => format!("{}{}", rng.random_range(1..40), capital(rng, 6)),
            (Field::Zone, _) => format!("{}{}", capital(rng, 26), rng.random_range(1..10)),
        }
    }
}

/// One of the first `n` capital letters.
fn capital(rng: &mut ChaCha8Rng, n: u8) -> char {
    char::from(b'A' + rng.random_range(0..n))
}

fn question(field: Field) -> String {
    format!("What is the {}?", field.key().to_lowercase())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// One question per card about one of its values.
    #[default]
    Qa,
    /// "Free OCR." with the whole card as the answer.
    Ocr,
    /// "Free OCR." of lines of 2-16 random letters and digits (no keys: only reading lowers the loss).
    Glyphs,
}

/// Where names, cities and colours come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Values {
    /// Small pools (a model can learn the kind of answer, and guess among few).
    #[default]
    Pools,
    /// Fresh random letters for every value: nothing to memorise, only reading gets them right.
    Random,
}

/// `count` records from `seed`: person cards of 3-5 fields in random order.
pub fn generate(count: usize, seed: u64, task: Task, source: Values) -> Vec<Record> {
    generate_sized(count, seed, task, source, Card::Person, 3..=5, &[])
}

/// [`generate`] for `card`s with `fields` lines a card (1 to 5, at most the card's fields; short cards first is a
/// reading curriculum). A non-empty `ask` puts every one of those fields on each card and asks only about them:
/// keys a model confuses, side by side (more lines than the range allows when it holds more fields than that).
pub fn generate_sized(
    count: usize,
    seed: u64,
    task: Task,
    source: Values,
    card: Card,
    fields_range: std::ops::RangeInclusive<usize>,
    ask: &[Field],
) -> Vec<Record> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|i| {
            let id = format!("synth-{seed}-{i}");
            if task == Task::Glyphs {
                let lines = rng.random_range(fields_range.clone());
                let text = (0..lines)
                    .map(|_| {
                        let len = rng.random_range(2..=16);
                        (0..len).map(|_| char::from(*GLYPHS.choose(&mut rng).expect("non-empty"))).collect::<String>()
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                return Record::new(id, "synth", text.clone(), "Free OCR.", vec![text]);
            }
            let fields = if ask.is_empty() {
                let mut fields = card.fields().to_vec();
                fields.shuffle(&mut rng);
                fields.truncate(rng.random_range(fields_range.clone()));
                fields
            } else {
                let mut others: Vec<Field> = card.fields().iter().filter(|f| !ask.contains(f)).copied().collect();
                others.shuffle(&mut rng);
                others.truncate(rng.random_range(fields_range.clone()).saturating_sub(ask.len()));
                let mut fields = [ask, &others].concat();
                fields.shuffle(&mut rng);
                fields
            };
            let values: Vec<(Field, String)> = fields.iter().map(|&f| (f, f.value(&mut rng, source))).collect();
            let text = values.iter().map(|(f, v)| format!("{}: {v}", f.key())).collect::<Vec<_>>().join("\n");
            match task {
                Task::Qa => {
                    let askable: Vec<&(Field, String)> =
                        values.iter().filter(|(f, _)| ask.is_empty() || ask.contains(f)).collect();
                    let (field, value) = (*askable.choose(&mut rng).expect("at least 1 field")).clone();
                    Record::new(id, "synth", text, question(field), vec![value])
                }
                Task::Ocr | Task::Glyphs => Record::new(id, "synth", text.clone(), "Free OCR.", vec![text]),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    /// Checks on what the generator made: which field a question asks, whether a value has its field's shape.
    impl Field {
        /// The field an instruction made by [`generate`] asks about.
        fn asked_in(instruction: &str) -> Option<Field> {
            Card::value_variants().iter().flat_map(|c| c.fields()).copied().find(|f| instruction == question(*f))
        }

        /// Whether `answer` is the right kind of value for this field (whatever the card says), for cards made from
        /// [`Values::Pools`].
        fn accepts(self, answer: &str) -> bool {
            match self {
                Field::Name => NAMES.contains(&answer),
                Field::City => CITIES.contains(&answer),
                Field::Colour => COLOURS.contains(&answer),
                Field::Year => answer.len() == 4 && answer.bytes().all(|b| b.is_ascii_digit()),
                Field::Code => answer.len() == 4 && answer.bytes().all(|b| CODE_CHARS.contains(&b)),
                Field::Flight => {
                    let (airline, number) = answer.split_at(answer.len().min(2));
                    airline.bytes().all(|b| b.is_ascii_uppercase()) && (2..=4).contains(&number.len()) && digits(number)
                }
                Field::Gate | Field::Zone => answer.strip_prefix(|c: char| c.is_ascii_uppercase()).is_some_and(digits),
                Field::Seat => answer.strip_suffix(|c: char| c.is_ascii_uppercase()).is_some_and(digits),
            }
        }
    }

    fn digits(s: &str) -> bool {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
    }

    #[test]
    fn cards_answer_their_question_and_are_seeded() {
        let records = generate(50, 3, Task::Qa, Values::Pools);
        assert_eq!(records, generate(50, 3, Task::Qa, Values::Pools));
        assert_ne!(records, generate(50, 4, Task::Qa, Values::Pools));
        for r in &records {
            let field = Field::asked_in(&r.instruction).expect("a known question");
            assert!(r.text.lines().any(|line| line == format!("{}: {}", field.key(), r.answer)), "{r:?}");
            assert!(field.accepts(&r.answer), "{r:?}");
            assert!((3..=5).contains(&r.text.lines().count()));
        }
        let ocr = generate(2, 3, Task::Ocr, Values::Pools);
        assert_eq!(ocr[0].answer, ocr[0].text);
    }

    #[test]
    fn card_sizes_follow_the_range() {
        let one = generate_sized(50, 2, Task::Ocr, Values::Random, Card::Person, 1..=1, &[]);
        assert!(one.iter().all(|r| r.text.lines().count() == 1 && r.answer == r.text));
        let sizes: std::collections::BTreeSet<usize> =
            generate_sized(200, 2, Task::Qa, Values::Pools, Card::Person, 2..=4, &[])
                .iter()
                .map(|r| r.text.lines().count())
                .collect();
        assert_eq!(sizes.into_iter().collect::<Vec<_>>(), [2, 3, 4]);
        let glyphs = generate_sized(100, 2, Task::Glyphs, Values::Random, Card::Person, 1..=2, &[]);
        for r in &glyphs {
            assert!(r.answer == r.text && r.instruction == "Free OCR." && (1..=2).contains(&r.text.lines().count()));
            assert!(r
                .text
                .lines()
                .all(|l| (2..=16).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphanumeric())));
        }
    }

    #[test]
    fn random_values_are_fresh_letters() {
        let records = generate(200, 5, Task::Qa, Values::Random);
        let names: std::collections::HashSet<&str> = records
            .iter()
            .filter(|r| Field::asked_in(&r.instruction) == Some(Field::Name))
            .map(|r| r.answers[0].as_str())
            .collect();
        assert!(names.len() > 20, "{names:?}");
        assert!(names.iter().all(|n| !NAMES.contains(n) && n.chars().next().unwrap().is_ascii_uppercase()));
        assert_eq!(records, generate(200, 5, Task::Qa, Values::Random));
    }

    #[test]
    fn kinds_accept_their_values_only() {
        assert!(Field::Year.accepts("1987") && !Field::Year.accepts("Oslo"));
        assert!(Field::City.accepts("Oslo") && !Field::City.accepts("Ada"));
        assert!(Field::Code.accepts("K7Q2") && !Field::Code.accepts("k7q2"));
        assert!(Field::Flight.accepts("KL1234") && !Field::Flight.accepts("K7"));
        assert!(Field::Seat.accepts("23C") && !Field::Seat.accepts("C23") && Field::Gate.accepts("C23"));
    }

    #[test]
    fn ticket_cards_ask_about_their_own_fields() {
        let records = generate_sized(200, 6, Task::Qa, Values::Pools, Card::Ticket, 3..=5, &[]);
        for r in &records {
            let field = Field::asked_in(&r.instruction).expect("a known question");
            assert!(Card::Ticket.fields().contains(&field), "{r:?}");
            assert!(field.accepts(&r.answer), "{r:?}");
            assert!(r.text.lines().any(|line| line == format!("{}: {}", field.key(), r.answer)), "{r:?}");
            // The reader preset's page holds 16 characters a line.
            assert!(r.text.lines().all(|l| l.len() <= 16) && (3..=4).contains(&r.text.lines().count()), "{r:?}");
        }
    }

    #[test]
    fn asked_fields_stand_side_by_side() {
        let ask = [Field::City, Field::Code];
        let records = generate_sized(100, 7, Task::Qa, Values::Random, Card::Person, 3..=4, &ask);
        let mut asked = std::collections::BTreeSet::new();
        for r in &records {
            let field = Field::asked_in(&r.instruction).expect("a known question");
            asked.insert(field.key());
            assert!(ask.contains(&field), "{r:?}");
            assert!(r.text.lines().any(|line| line == format!("{}: {}", field.key(), r.answer)), "{r:?}");
            assert!(
                r.text.contains("City: ") && r.text.contains("Code: ") && (3..=4).contains(&r.text.lines().count())
            );
        }
        assert_eq!(asked.into_iter().collect::<Vec<_>>(), ["City", "Code"]);
        // Without `ask` the cards are those the recipe's seeds have always made.
        assert_eq!(
            generate_sized(20, 7, Task::Qa, Values::Random, Card::Person, 3..=5, &[]),
            generate(20, 7, Task::Qa, Values::Random)
        );
    }
}
