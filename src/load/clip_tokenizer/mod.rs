//! CLIP's byte-level BPE tokenizer (Radford et al. 2021, "Learning Transferable Visual Models
//! From Natural Language Supervision", OpenAI CLIP's `simple_tokenizer.py`), with the text
//! handling of transformers' `CLIPTokenizer` as diffusers' Stable Diffusion pipelines call it.
//!
//! The steps, in transformers' order (its tokenizers-backed `CLIPTokenizer`, transformers ≥ 5):
//! 1. added special tokens (`<|startoftext|>`, `<|endoftext|>`, the pad token — `!` in SD 2.x
//!    tokenizers) are split out of the raw text first, longest match leftmost; so every `!` in
//!    an SD 2.x prompt is id 0, never `!</w>`;
//! 2. each remaining piece is normalised: Unicode NFC, every whitespace run → one space,
//!    lowercase (per character, no final-sigma rule);
//! 3. pre-tokenised with CLIP's regex (contractions, letter runs, single digits, runs of other
//!    non-space characters), each piece split again by GPT-2's byte-level regex, then written
//!    as bytes in GPT-2's printable byte alphabet;
//! 4. byte-level BPE with `</w>` on a word's last symbol, merges applied by rank;
//! 5. `<|startoftext|>` … `<|endoftext|>`, truncated to `model_max_length` (77) and padded with
//!    the pad token, as diffusers calls it (`padding="max_length", truncation=True`).

mod files;

pub use files::{
    read_merges_txt, read_special_tokens, read_vocab_json, resolve_tokenizer_dir, SpecialTokens,
};

use crate::error::{Error, Result};
use regex::Regex;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;
use unicode_normalization::UnicodeNormalization;

/// The sequence length of every CLIP text encoder Stable Diffusion uses.
pub const MODEL_MAX_LENGTH: usize = 77;

/// CLIP's pre-tokenisation pattern (transformers' `CLIPTokenizer`, which also keeps the two
/// special-token spellings whole; they reach it only when not split out as added tokens).
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// GPT-2's byte-level split, which transformers' `ByteLevel` pre-tokenizer applies to each CLIP
/// piece. A piece holds no whitespace, so GPT-2's whitespace alternatives never match here.
const BYTE_LEVEL_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";

/// Words whose BPE result is kept; prompts are short, so the cache is just cleared when full.
const CACHE_LIMIT: usize = 16384;

/// An added token, matched in the text before BPE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedToken {
    pub content: String,
    pub id: u32,
    /// Matched in the normalised (lowercased) text instead of the raw text.
    pub normalized: bool,
}

/// The ids of a prompt, as the text encoder takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// `<|startoftext|>`, the prompt's tokens, `<|endoftext|>`, then pad ids up to
    /// `model_max_length`.
    pub input_ids: Vec<u32>,
    /// How many of the prompt's tokens were cut to fit (diffusers warns when > 0).
    pub truncated: usize,
}

/// A CLIP BPE tokenizer: vocabulary, merge ranks and added tokens.
#[derive(Debug)]
pub struct ClipTokenizer {
    vocab: HashMap<String, u32>,
    /// (left id, right id) → (rank, merged id).
    ranks: HashMap<(u32, u32), (u32, u32)>,
    byte_chars: [char; 256],
    clip_split: Regex,
    byte_level_split: Regex,
    /// Longest first, so a scan takes the longest match at a position.
    added: Vec<AddedToken>,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    model_max_length: usize,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

/// GPT-2's (and CLIP's) byte → printable character table: the printable Latin-1 bytes map to
/// themselves, the other 68 to U+0100.. in byte order.
pub fn bytes_to_unicode() -> [char; 256] {
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let mut table = ['\0'; 256];
    let mut n = 0;
    for (b, slot) in table.iter_mut().enumerate() {
        let b = b as u32;
        *slot = if printable(b) {
            char::from_u32(b).expect("Latin-1")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("U+0100..")
        };
    }
    table
}

impl ClipTokenizer {
    /// A tokenizer from a vocabulary (token → id), merges in rank order, and the special
    /// tokens. `source` names the files in errors. A special token missing from the vocabulary
    /// gets the next free id, as transformers adds it.
    pub fn new(
        vocab: HashMap<String, u32>,
        merges: Vec<(String, String)>,
        special: &SpecialTokens,
        source: &str,
    ) -> Result<Self> {
        let byte_chars = bytes_to_unicode();
        for c in byte_chars {
            for t in [c.to_string(), format!("{c}</w>")] {
                if !vocab.contains_key(&t) {
                    return Err(Error::Load {
                        file: source.into(),
                        reason: format!("not a CLIP byte-level BPE vocabulary: no token {t:?}"),
                    });
                }
            }
        }
        let mut ranks = HashMap::with_capacity(merges.len());
        for (i, (a, b)) in merges.into_iter().enumerate() {
            let merged = format!("{a}{b}");
            let id = |t: &str| {
                vocab.get(t).copied().ok_or_else(|| Error::Load {
                    file: source.into(),
                    reason: format!("merge {} `{a} {b}`: {t:?} is not in the vocabulary", i + 1),
                })
            };
            let key = (id(&a)?, id(&b)?);
            let value = (i as u32, id(&merged)?);
            ranks.entry(key).or_insert(value);
        }
        let mut vocab = vocab;
        let mut added: Vec<AddedToken> = Vec::new();
        let mut next_id = vocab.values().copied().max().map_or(0, |m| m + 1);
        for (content, normalized) in special.added_tokens() {
            if added.iter().any(|a| a.content == content) {
                continue;
            }
            let id = match vocab.get(&content) {
                Some(&id) => id,
                None => {
                    vocab.insert(content.clone(), next_id);
                    next_id += 1;
                    next_id - 1
                }
            };
            added.push(AddedToken {
                content,
                id,
                normalized,
            });
        }
        added.sort_by_key(|a| std::cmp::Reverse(a.content.len()));
        let id = |t: &str| vocab.get(t).copied();
        let need = |name: &str, t: &str| {
            id(t).ok_or_else(|| Error::Load {
                file: source.into(),
                reason: format!("{name} {t:?} is not in the vocabulary"),
            })
        };
        Ok(Self {
            bos_id: need("bos_token", &special.bos)?,
            eos_id: need("eos_token", &special.eos)?,
            pad_id: need("pad_token", &special.pad)?,
            model_max_length: special.model_max_length,
            vocab,
            ranks,
            byte_chars,
            clip_split: Regex::new(CLIP_PATTERN).expect("CLIP pattern"),
            byte_level_split: Regex::new(BYTE_LEVEL_PATTERN).expect("byte-level pattern"),
            added,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn bos_token_id(&self) -> u32 {
        self.bos_id
    }
    pub fn eos_token_id(&self) -> u32 {
        self.eos_id
    }
    pub fn pad_token_id(&self) -> u32 {
        self.pad_id
    }
    pub fn model_max_length(&self) -> usize {
        self.model_max_length
    }
    /// The number of ids (vocabulary plus added tokens not in it).
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }
    /// The id of a vocabulary or added token.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }
    /// The added tokens, longest first.
    pub fn added_tokens(&self) -> &[AddedToken] {
        &self.added
    }

    /// `<|startoftext|>`, the prompt's tokens, `<|endoftext|>`: no truncation, no padding.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = vec![self.bos_id];
        self.tokens(text, &mut ids);
        ids.push(self.eos_id);
        ids
    }

    /// The ids as diffusers' pipelines take them: truncated to `model_max_length` (the prompt's
    /// tokens cut, `<|endoftext|>` kept last) and padded with the pad token.
    pub fn encode_padded(&self, text: &str) -> Encoding {
        let max = self.model_max_length.max(2);
        let mut ids = vec![self.bos_id];
        self.tokens(text, &mut ids);
        let truncated = ids.len().saturating_sub(max - 1);
        ids.truncate(max - 1);
        ids.push(self.eos_id);
        ids.resize(max, self.pad_id);
        Encoding {
            input_ids: ids,
            truncated,
        }
    }

    /// The prompt's token ids (no bos/eos), appended to `out`.
    fn tokens(&self, text: &str, out: &mut Vec<u32>) {
        for raw in split_added(text, &self.added, false) {
            match raw {
                Piece::Added(id) => out.push(id),
                Piece::Text(t) => {
                    let norm = normalize(t);
                    for piece in split_added(&norm, &self.added, true) {
                        match piece {
                            Piece::Added(id) => out.push(id),
                            Piece::Text(t) => self.words(t, out),
                        }
                    }
                }
            }
        }
    }

    /// Pre-tokenises normalised text and BPE-encodes each word.
    fn words(&self, text: &str, out: &mut Vec<u32>) {
        for m in self.clip_split.find_iter(text) {
            for w in split_isolated(&self.byte_level_split, m.as_str()) {
                let word: String = w.bytes().map(|b| self.byte_chars[b as usize]).collect();
                self.bpe(&word, out);
            }
        }
    }

    /// Byte-level BPE of one word (already in the byte alphabet), through the cache.
    fn bpe(&self, word: &str, out: &mut Vec<u32>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ids) = cache.get(word) {
            out.extend_from_slice(ids);
            return;
        }
        // Symbols as ids (every byte character, with and without `</w>`, is in the vocabulary,
        // and every merge's result is).
        let n = word.chars().count();
        let ids: Vec<u32> = word
            .chars()
            .enumerate()
            .map(|(i, c)| {
                let key = if i + 1 == n {
                    format!("{c}</w>")
                } else {
                    c.to_string()
                };
                self.vocab[&key]
            })
            .collect();
        let ids = merge_by_rank(&self.ranks, ids);
        out.extend_from_slice(&ids);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(word.to_string(), ids);
    }
}

/// BPE as OpenAI's `bpe` defines it: in rounds, the lowest-ranked adjacent pair is merged at
/// every occurrence, left to right over the round's starting word (pairs a round creates wait
/// for the next round), until no adjacent pair has a rank. Done with a heap of (rank, position)
/// over a linked list of symbols, so a word of n symbols costs O(n log n), not O(n²) — a
/// 100 000-letter "word" in a prompt is milliseconds, not minutes.
fn merge_by_rank(ranks: &HashMap<(u32, u32), (u32, u32)>, mut ids: Vec<u32>) -> Vec<u32> {
    let n = ids.len();
    if n < 2 {
        return ids;
    }
    const NONE: usize = usize::MAX;
    let mut next: Vec<usize> = (1..n).chain([NONE]).collect();
    let mut prev: Vec<usize> = [NONE].into_iter().chain(0..n - 1).collect();
    let mut alive = vec![true; n];
    // Every adjacent pair that has a rank is in the heap (stale entries are skipped on pop).
    let mut heap: BinaryHeap<Reverse<(u32, usize)>> = (0..n - 1)
        .filter_map(|i| {
            ranks
                .get(&(ids[i], ids[i + 1]))
                .map(|&(r, _)| Reverse((r, i)))
        })
        .collect();
    let mut round = Vec::new();
    let mut merged_at = Vec::new();
    while let Some(&Reverse((rank, _))) = heap.peek() {
        round.clear();
        while let Some(&Reverse((r, i))) = heap.peek() {
            if r != rank {
                break;
            }
            heap.pop();
            round.push(i);
        }
        // Positions are the word's original indices, so ascending = left to right.
        round.sort_unstable();
        round.dedup();
        merged_at.clear();
        for &i in &round {
            let j = next[i];
            if !alive[i] || j == NONE {
                continue;
            }
            // A rank names one pair (the first merge line for it), so this is the round's pair.
            let Some(&(r, m)) = ranks.get(&(ids[i], ids[j])) else {
                continue;
            };
            if r != rank {
                continue;
            }
            ids[i] = m;
            alive[j] = false;
            next[i] = next[j];
            if next[j] != NONE {
                prev[next[j]] = i;
            }
            merged_at.push(i);
        }
        for &i in &merged_at {
            if !alive[i] {
                continue;
            }
            for (a, b) in [(prev[i], i), (i, next[i])] {
                if a != NONE && b != NONE {
                    if let Some(&(r, _)) = ranks.get(&(ids[a], ids[b])) {
                        heap.push(Reverse((r, a)));
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i != NONE {
        out.push(ids[i]);
        i = next[i];
    }
    out
}

/// transformers' `CLIPTokenizer` normaliser: NFC, whitespace runs → one space, lowercase per
/// character (tokenizers lowercases char by char: a final Σ becomes σ, not ς).
pub fn normalize(text: &str) -> String {
    let nfc: String = text.nfc().collect();
    let mut out = String::with_capacity(nfc.len());
    let mut in_space = false;
    for c in nfc.chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            in_space = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

enum Piece<'a> {
    Text(&'a str),
    Added(u32),
}

/// Splits `text` at the added tokens whose `normalized` flag is `normalized`: at each position
/// the longest match, leftmost first (tokenizers' added-vocabulary split).
fn split_added<'a>(text: &'a str, added: &[AddedToken], normalized: bool) -> Vec<Piece<'a>> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let hit = added
            .iter()
            .filter(|a| a.normalized == normalized && !a.content.is_empty())
            .find(|a| rest.starts_with(&a.content));
        match hit {
            Some(a) => {
                if start < i {
                    pieces.push(Piece::Text(&text[start..i]));
                }
                pieces.push(Piece::Added(a.id));
                i += a.content.len();
                start = i;
            }
            None => i += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    if start < text.len() {
        pieces.push(Piece::Text(&text[start..]));
    }
    pieces
}

/// Matches of `re` in `text` with the unmatched stretches between them kept as pieces too
/// (tokenizers' `Isolated` split behaviour).
fn split_isolated<'a>(re: &Regex, text: &'a str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut last = 0;
    for m in re.find_iter(text) {
        if m.start() > last {
            out.push(&text[last..m.start()]);
        }
        out.push(m.as_str());
        last = m.end();
    }
    if last < text.len() {
        out.push(&text[last..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection_onto_printable_chars() {
        let t = bytes_to_unicode();
        let mut seen: Vec<char> = t.to_vec();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 256);
        assert_eq!(t[b'!' as usize], '!');
        assert_eq!(t[b' ' as usize], '\u{120}'); // GPT-2's "Ġ"
        assert_eq!(t[0], '\u{100}');
    }

    #[test]
    fn normalize_folds_whitespace_and_case_per_char() {
        assert_eq!(normalize("A\u{a0}\t\n B"), "a b");
        assert_eq!(normalize("ΟΔΟΣ"), "οδοσ"); // no final sigma
        assert_eq!(normalize("e\u{301}"), "\u{e9}");
    }
    /// The quadratic definition (OpenAI's `bpe` loop), as the oracle of [`merge_by_rank`].
    fn merge_naive(ranks: &HashMap<(u32, u32), (u32, u32)>, mut ids: Vec<u32>) -> Vec<u32> {
        while ids.len() > 1 {
            let best = ids
                .windows(2)
                .filter_map(|p| ranks.get(&(p[0], p[1])).map(|&(r, m)| (r, p[0], p[1], m)))
                .min_by_key(|t| t.0);
            let Some((_, a, b, m)) = best else { break };
            let mut merged = Vec::with_capacity(ids.len());
            let mut i = 0;
            while i < ids.len() {
                if i + 1 < ids.len() && ids[i] == a && ids[i + 1] == b {
                    merged.push(m);
                    i += 2;
                } else {
                    merged.push(ids[i]);
                    i += 1;
                }
            }
            ids = merged;
        }
        ids
    }

    /// Random merge tables over a 3-symbol alphabet, including the pathological ones a trained
    /// BPE never has (a merge ranked before the merge creating its input; a merge whose result
    /// is one of its inputs), and random words: the heap gives the definition's result.
    #[test]
    fn merge_by_rank_is_the_quadratic_definition() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n) as u32
        };
        for _ in 0..400 {
            let symbols = 3 + rnd(6) as u64;
            let mut ranks = HashMap::new();
            for r in 0..rnd(12) {
                let key = (rnd(symbols), rnd(symbols));
                ranks.entry(key).or_insert((r, rnd(symbols)));
            }
            for _ in 0..8 {
                let len = rnd(40) as usize;
                let word: Vec<u32> = (0..len).map(|_| rnd(3)).collect();
                assert_eq!(
                    merge_by_rank(&ranks, word.clone()),
                    merge_naive(&ranks, word.clone()),
                    "ranks {ranks:?}, word {word:?}"
                );
            }
        }
    }

    #[test]
    fn merge_by_rank_is_fast_on_a_long_word() {
        // (0,0) → 1, (1,1) → 2, …: a 2^16-symbol word collapses in 16 rounds.
        let ranks: HashMap<(u32, u32), (u32, u32)> =
            (0..16).map(|k| ((k, k), (k, k + 1))).collect();
        assert_eq!(merge_by_rank(&ranks, vec![0; 1 << 16]), vec![16]);
        assert_eq!(merge_by_rank(&ranks, vec![0; 3]), vec![1, 0]);
    }
}
