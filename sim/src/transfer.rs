//! Bytes at every place a model can be cut across two devices, for one request.
//!
//! Cuts, in model order: inside the vision encoder after each layer; after the encoder, before the
//! projector; after the projector (the modality boundary, `D_emb = N_v · d · b`); inside the LLM
//! after each layer (a pipeline cut: every prefill and every decode step crosses it); and between
//! prefill and decode (the KV cache, `D_KV = 2 · L · n_kv · d_head · s · b`, with multi-head latent
//! attention `L · (kv_lora_rank + qk_rope_head_dim) · s · b`; a cross-attention
//! model's cross layers add the image's own KV, `2 · L_cross · n_kv · d_head · N_v · b`, and
//! hold none of the context's). A cut *preserves
//! stage-based execution* when each side runs once per request and hands over once: all cuts but
//! the pipeline cuts inside the LLM.

use serde::Serialize;

use crate::bounds::Bound;
use crate::catalog::{Dtype, ImageTokens, LinkSpec, ModelSpec, ProjectorSpec, VitSpec, WindowKind};
use crate::error::InputError;
use crate::table::{Table, Value};

/// The request a table is computed for.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestShape {
    pub images: Vec<ImageTokens>,
    /// LLM tokens from the images (normally the sum over `images`).
    pub visual_tokens: u64,
    /// Context at the prefill/decode cut (visual + text prompt by default).
    pub context_tokens: u64,
    pub output_tokens: u64,
    pub dtype: Dtype,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CutKind {
    VisionLayer,
    PreProjector,
    ModalityBoundary,
    LlmLayer,
    PrefillDecode,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cut {
    pub name: String,
    pub kind: CutKind,
    pub stage_based: bool,
    /// Bytes crossing per request (for pipeline cuts: one prefill plus every decode step).
    pub bytes: u64,
    /// Pipeline cuts: bytes per prefill and per decode step.
    pub bytes_per_prefill: Option<u64>,
    pub bytes_per_decode_step: Option<u64>,
    /// bytes / modality-boundary bytes (none for text-only models).
    pub ratio_to_modality: Option<f64>,
    /// The smallest cut among those that preserve stage-based execution.
    pub smallest_stage_based: bool,
    /// Seconds over each link, in the order asked for.
    pub seconds: Vec<f64>,
}

/// Computes every cut. `links` gives the time columns.
pub fn cuts(model: &ModelSpec, shape: &RequestShape, links: &[&LinkSpec]) -> Vec<Cut> {
    let b = shape.dtype.bytes();
    let llm = &model.llm;
    let mut out = Vec::new();
    let one = |bytes: u64| {
        links
            .iter()
            .map(|l| l.transfer_s(bytes))
            .collect::<Vec<_>>()
    };
    let mut push = |name: String, kind: CutKind, bytes: u64, pipeline: Option<(u64, u64)>| {
        let seconds = match pipeline {
            // A pipeline cut is crossed once per prefill and once per decode step.
            Some((prefill, step)) => links
                .iter()
                .map(|l| {
                    l.transfer_s(prefill)
                        + (shape.output_tokens.saturating_sub(1)) as f64 * l.transfer_s(step)
                })
                .collect(),
            None => one(bytes),
        };
        out.push(Cut {
            name,
            kind,
            stage_based: pipeline.is_none(),
            bytes,
            bytes_per_prefill: pipeline.map(|p| p.0),
            bytes_per_decode_step: pipeline.map(|p| p.1),
            ratio_to_modality: None,
            smallest_stage_based: false,
            seconds,
        });
    };
    if let Some(v) = &model.vision
        && !shape.images.is_empty()
    {
        let taps = VisionTaps {
            deepstack: &v.deepstack,
            concatenated: &v.feature_taps,
        };
        for (name, bytes) in vision_layer_bytes(&v.vit, taps, &shape.images, shape.dtype) {
            push(name, CutKind::VisionLayer, bytes, None);
        }
        // Every DeepStack tap crosses too: each has a projector of its own on the far side.
        let projector_tokens: u64 = shape.images.iter().map(|i| i.projector_tokens).sum();
        push(
            "pre_projector".into(),
            CutKind::PreProjector,
            (1 + v.deepstack.len() as u64) * projector_tokens * v.projector.input_width() * b,
            None,
        );
        // The vision side ships its features; text tokens a processor puts between them
        // (Pixtral's row breaks) are looked up on the LLM side.
        let features: u64 = shape.images.iter().map(|i| i.feature_tokens).sum();
        push(
            "modality_boundary".into(),
            CutKind::ModalityBoundary,
            model.emb_bytes(features, shape.dtype),
            None,
        );
    }
    let hidden = llm.hidden * b;
    let decode_steps = shape.output_tokens.saturating_sub(1);
    // DeepStack features are added after the LLM's first layers: a cut before one of them ships
    // the features it still needs.
    let taps = model
        .vision
        .as_ref()
        .map_or(0, |v| v.deepstack.len() as u64);
    let features: u64 = shape.images.iter().map(|i| i.feature_tokens).sum();
    let cross = llm
        .cross_attention
        .as_ref()
        .map_or(&[][..], |c| &c.layers[..]);
    for layer in 1..llm.layers {
        // A cross-attention layer past the cut reads the vision states: the prefill ships them.
        let cross_after = u64::from(cross.iter().any(|&i| i >= layer));
        let prefill = shape.context_tokens * hidden
            + (taps.saturating_sub(layer) + cross_after) * features * hidden;
        push(
            format!("llm.layer{layer}"),
            CutKind::LlmLayer,
            prefill + decode_steps * hidden,
            Some((prefill, hidden)),
        );
    }
    push(
        "prefill_decode_kv".into(),
        CutKind::PrefillDecode,
        llm.kv_bytes(shape.context_tokens, shape.dtype) + llm.cross_kv_bytes(features, shape.dtype),
        None,
    );

    let modality = out
        .iter()
        .find(|c| c.kind == CutKind::ModalityBoundary)
        .map(|c| c.bytes);
    if let Some(m) = modality {
        for c in &mut out {
            c.ratio_to_modality = Some(c.bytes as f64 / m as f64);
        }
    }
    if let Some(min) = out.iter().filter(|c| c.stage_based).map(|c| c.bytes).min() {
        for c in out.iter_mut().filter(|c| c.stage_based && c.bytes == min) {
            c.smallest_stage_based = true;
        }
    }
    out
}

/// The ViT states a vision side hands over besides its last layer's.
#[derive(Debug, Clone, Copy, Default)]
pub struct VisionTaps<'a> {
    /// Qwen3-VL DeepStack: layer indices (from 0) whose outputs get projectors of their own.
    pub deepstack: &'a [u64],
    /// Llama-3.2-Vision: hidden-state indices (0 the patch embeddings, k after layer k)
    /// concatenated with the last layer's before the projector.
    pub concatenated: &'a [u64],
}

/// Bytes after each ViT layer that runs: its output (tokens × width), and the outputs of the
/// taps already passed, which the far side's projectors need.
pub fn vision_layer_bytes(
    vit: &VitSpec,
    taps: VisionTaps,
    images: &[ImageTokens],
    dtype: Dtype,
) -> Vec<(String, u64)> {
    let tokens: u64 = images.iter().map(|i| i.encoder_tokens).sum();
    (1..=vit.layers_run)
        .map(|l| {
            // Layer index i (from 0) has run once l > i; hidden state k exists once l ≥ k.
            let taps = (taps.deepstack.iter().filter(|&&i| i < l).count()
                + taps.concatenated.iter().filter(|&&k| k <= l).count())
                as u64;
            (
                format!("vision.layer{l}"),
                (1 + taps) * tokens * vit.hidden * dtype.bytes(),
            )
        })
        .collect()
}

/// `R = D_KV / D_emb = 2L · (n_kv · d_head / d) · (s / N_v)` (multi-head latent attention: `L ·
/// ((kv_lora_rank + qk_rope_head_dim) / d) · (s / N_v)`); with cross-attention layers the image's
/// own KV adds `2 · L_cross · (n_kv · d_head / d)`, whatever the context.
pub fn kv_to_embedding_ratio(
    model: &ModelSpec,
    context_tokens: u64,
    visual_tokens: u64,
    dtype: Dtype,
) -> f64 {
    (model.llm.kv_bytes(context_tokens, dtype) + model.llm.cross_kv_bytes(visual_tokens, dtype))
        as f64
        / model.emb_bytes(visual_tokens, dtype) as f64
}

/// What the table says in words: which cut is smallest, and where the modality boundary is not.
pub fn findings(model: &ModelSpec, cuts: &[Cut]) -> Vec<String> {
    let mut notes = Vec::new();
    let get = |k: CutKind| cuts.iter().find(|c| c.kind == k);
    if let Some(best) = cuts.iter().find(|c| c.smallest_stage_based) {
        notes.push(format!(
            "smallest cut that keeps stage-based execution: {} ({} B)",
            best.name,
            group(best.bytes)
        ));
    }
    if let (Some(pre), Some(post)) = (get(CutKind::PreProjector), get(CutKind::ModalityBoundary)) {
        if pre.bytes < post.bytes {
            let widens = match model.vision.as_ref().map(|v| &v.projector) {
                // Mistral 3's and Kimi-K2.5's projectors merge patches: per token they take
                // several.
                Some(
                    &ProjectorSpec::MergedMlp {
                        vit_hidden,
                        merge,
                        output,
                        ..
                    }
                    | &ProjectorSpec::PatchMerger {
                        vit_hidden,
                        merge,
                        output,
                        ..
                    },
                ) => format!(
                    "the projector merges {} patches of {vit_hidden} values into one token of {output}",
                    merge * merge
                ),
                p => format!(
                    "the projector widens {} → {} values per token",
                    p.map_or(0, |p| p.input_width()),
                    model.llm.hidden
                ),
            };
            notes.push(format!(
                "the pre-projector cut ({} B) is smaller than the modality boundary ({} B): {widens}; \
                 cutting before it ships {:.1}× less, at the cost of running the projector on the LLM side",
                group(pre.bytes),
                group(post.bytes),
                post.bytes as f64 / pre.bytes as f64
            ));
        } else {
            notes.push(format!(
                "the modality boundary ({} B) is smaller than the pre-projector cut ({} B)",
                group(post.bytes),
                group(pre.bytes)
            ));
        }
    }
    if let (Some(post), Some(kv)) = (get(CutKind::ModalityBoundary), get(CutKind::PrefillDecode)) {
        notes.push(format!(
            "R = D_KV / D_emb = {:.1}",
            kv.bytes as f64 / post.bytes as f64
        ));
        let cross = model.llm.cross_attention_layers();
        if cross > 0 {
            // The cross layers' KV is the vision states through k and v: 2 · n_kv · d_head
            // values per state and layer against the state's d.
            notes.push(format!(
                "the image enters through {cross} cross-attention layers, not the context: their KV ({:.1}× the modality \
                 boundary, 2 · {cross} · {} / {}) is part of the prefill→decode cut however short the text",
                2.0 * cross as f64 * model.llm.kv_dim() as f64 / model.llm.hidden as f64,
                model.llm.kv_dim(),
                model.llm.hidden
            ));
        }
    }
    notes
}

/// 4718592 → "4,718,592".
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Builds the request shape from images (w, h), text prompt tokens and optional overrides.
pub fn request_shape(
    model: &ModelSpec,
    images: &[(u64, u64)],
    prompt_tokens: u64,
    visual_override: Option<u64>,
    context_override: Option<u64>,
    output_tokens: u64,
    dtype: Dtype,
) -> Result<RequestShape, InputError> {
    let mut tokens = Vec::new();
    if model.vision.is_some() {
        for &(w, h) in images {
            tokens.push(model.image_tokens(w, h)?);
        }
    }
    let visual = visual_override.unwrap_or_else(|| tokens.iter().map(|t| t.llm_tokens).sum());
    let context = context_override.unwrap_or(visual + prompt_tokens);
    if context == 0 {
        return Err(InputError::new(
            "context is 0 tokens: give images, --prompt-tokens or --context",
        ));
    }
    if context > 10_000_000 || output_tokens > 10_000_000 || prompt_tokens > 10_000_000 {
        return Err(InputError::new(format!(
            "{context} context / {output_tokens} output tokens is absurd for one request: give at most 10,000,000"
        )));
    }
    if output_tokens == 0 {
        return Err(InputError::new(
            "--output-tokens 0: a request generates at least one token",
        ));
    }
    if let Some(v) = visual_override {
        // Scale the per-image counts so the vision-side cuts agree with the forced LLM tokens.
        let total: u64 = tokens.iter().map(|t| t.llm_tokens).sum();
        if total > 0 && v != total {
            let f = v as f64 / total as f64;
            let scale = |x: u64| (x as f64 * f).round() as u64;
            tokens = tokens
                .iter()
                .map(|t| ImageTokens {
                    encoder_tokens: scale(t.encoder_tokens),
                    projector_tokens: scale(t.projector_tokens),
                    feature_tokens: scale(t.feature_tokens),
                    llm_tokens: scale(t.llm_tokens),
                    ..*t
                })
                .collect();
        }
    }
    Ok(RequestShape {
        images: tokens,
        visual_tokens: visual,
        context_tokens: context,
        output_tokens,
        dtype,
    })
}

/// The cuts as a table; `collapse` merges runs of equal layer cuts (`vision.layer1-23`) for reading.
pub fn cuts_table(model: &str, cuts: &[Cut], links: &[&LinkSpec], collapse: bool) -> Table {
    let mut cols = vec![
        "model",
        "cut",
        "kind",
        "stage_based",
        "bytes",
        "bytes_per_prefill",
        "bytes_per_decode_step",
        "ratio_to_modality",
        "smallest",
    ];
    let time_cols: Vec<String> = links.iter().map(|l| format!("ms_{}", l.name)).collect();
    cols.extend(time_cols.iter().map(String::as_str));
    let mut t = Table::new(&cols);
    let mut i = 0;
    while i < cuts.len() {
        let c = &cuts[i];
        let mut j = i + 1;
        if collapse && matches!(c.kind, CutKind::VisionLayer | CutKind::LlmLayer) {
            while j < cuts.len() && cuts[j].kind == c.kind && cuts[j].bytes == c.bytes {
                j += 1;
            }
        }
        let name = if j - i > 1 {
            let last = cuts[j - 1].name.rsplit_once("layer").map_or("", |x| x.1);
            format!("{}-{last}", c.name)
        } else {
            c.name.clone()
        };
        let opt = |v: Option<u64>| v.map_or(Value::Null, Value::U64);
        let mut row = vec![
            Value::Str(model.to_string()),
            Value::Str(name),
            Value::Str(
                serde_json::to_value(c.kind)
                    .expect("unit enum")
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ),
            Value::Bool(c.stage_based),
            Value::U64(c.bytes),
            opt(c.bytes_per_prefill),
            opt(c.bytes_per_decode_step),
            c.ratio_to_modality.map_or(Value::Null, Value::F64),
            Value::Bool(c.smallest_stage_based),
        ];
        row.extend(c.seconds.iter().map(|s| Value::F64(s * 1e3)));
        t.push(row);
        i = j;
    }
    t
}

/// R against depth: the model's own width and attention, with its layer count replaced.
pub fn depth_table(
    models: &[ModelSpec],
    depths: &[u64],
    context: u64,
    visual: u64,
    dtype: Dtype,
) -> Table {
    let mut t = Table::new(&[
        "model",
        "attention",
        "layers",
        "kv_bytes",
        "emb_bytes",
        "R",
        "R_per_layer",
    ]);
    for m in models {
        let attention = if let Some(mla) = m.llm.mla {
            format!(
                "MLA {} (latent {} + {})",
                m.llm.heads, mla.kv_lora_rank, mla.qk_rope_head_dim
            )
        } else if m.llm.kv_heads == m.llm.heads {
            format!("MHA {}", m.llm.heads)
        } else {
            format!("GQA {}/{}", m.llm.kv_heads, m.llm.heads)
        };
        for &l in depths {
            let mut deep = m.clone();
            deep.llm = m.llm.with_layers(l);
            let r = kv_to_embedding_ratio(&deep, context, visual, dtype);
            t.push(vec![
                Value::Str(m.name.clone()),
                Value::Str(attention.clone()),
                Value::U64(l),
                Value::U64(
                    deep.llm.kv_bytes(context, dtype) + deep.llm.cross_kv_bytes(visual, dtype),
                ),
                Value::U64(deep.emb_bytes(visual, dtype)),
                Value::F64(r),
                Value::F64(r / l as f64),
            ]);
        }
    }
    t
}

/// Visual tokens and embedding bytes over image sizes, by the model's own rule.
pub fn image_sizes_table(
    model: &ModelSpec,
    sizes: &[(u64, u64)],
    dtype: Dtype,
) -> Result<Table, InputError> {
    let mut t = Table::new(&[
        "model",
        "width",
        "height",
        "resized_width",
        "resized_height",
        "vit_tokens",
        "llm_tokens",
        "emb_bytes",
    ]);
    for &(w, h) in sizes {
        let tok = model.image_tokens(w, h)?;
        t.push(vec![
            Value::Str(model.name.clone()),
            Value::U64(w),
            Value::U64(h),
            Value::U64(tok.resized_width),
            Value::U64(tok.resized_height),
            Value::U64(tok.encoder_tokens),
            Value::U64(tok.llm_tokens),
            Value::U64(model.emb_bytes(tok.feature_tokens, dtype)),
        ]);
    }
    Ok(t)
}

/// What `hetsim transfer` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Cuts,
    Depth,
    ImageSizes,
}

/// Everything `hetsim transfer` was asked, already parsed.
#[derive(Debug, Clone)]
pub struct TransferQuery {
    /// Built-in names or `config.json` paths.
    pub models: Vec<String>,
    /// Image sizes (width, height); empty means a text-only request.
    pub images: Vec<(u64, u64)>,
    pub prompt_tokens: u64,
    pub visual_tokens: Option<u64>,
    pub context_tokens: Option<u64>,
    pub output_tokens: u64,
    pub dtype: Dtype,
    /// Replace the LLM's depth (the O(L) question).
    pub layers: Option<u64>,
    pub links: Vec<&'static LinkSpec>,
    pub view: View,
    pub depths: Vec<u64>,
    /// For the image-sizes view.
    pub sizes: Vec<(u64, u64)>,
}

/// One table per model (or one for the depth sweep), with findings in words.
pub struct TransferReport {
    pub tables: Vec<Table>,
    pub notes: Vec<String>,
}

/// Parses `640x480` into (640, 480).
pub fn parse_size(s: &str) -> Result<(u64, u64), InputError> {
    let bad = || {
        InputError::new(format!(
            "image size `{s}`: expected WIDTHxHEIGHT in pixels, e.g. 640x480"
        ))
    };
    let (w, h) = s.split_once(['x', 'X', '×']).ok_or_else(bad)?;
    let (w, h): (u64, u64) = (
        w.trim().parse().map_err(|_| bad())?,
        h.trim().parse().map_err(|_| bad())?,
    );
    if w == 0 || h == 0 || w > 100_000 || h > 100_000 {
        return Err(InputError::new(format!(
            "image size `{s}`: sides must be 1 to 100,000 pixels"
        )));
    }
    Ok((w, h))
}

// Ranges of the command-line numbers: the depths of the HF config reader, token counts far
// past any context window.
const LAYERS: Bound = Bound::closed(1.0, 1024.0, "layers");
const TOKENS: Bound = Bound::closed(0.0, 1e7, "tokens");

impl TransferQuery {
    /// Every number in range, and the table no larger than `work::MAX_TRANSFER_CELLS` unless
    /// `allow_large`.
    pub fn check(&self, allow_large: bool) -> Result<(), InputError> {
        if let Some(l) = self.layers {
            LAYERS.check_u64("--layers", l)?;
        }
        for d in &self.depths {
            LAYERS.check_u64("--depths", *d)?;
        }
        for (flag, v) in [
            ("--prompt-tokens", Some(self.prompt_tokens)),
            ("--visual-tokens", self.visual_tokens),
            ("--context", self.context_tokens),
            ("--output-tokens", Some(self.output_tokens)),
        ] {
            if let Some(v) = v {
                TOKENS.check_u64(flag, v)?;
            }
        }
        // Rows: a cut per layer (the LLM's, a vision tower's and a few more; config depths are
        // bounded by the reader), a depth or an image size each; a column per link beside a
        // few fixed ones.
        let rows = match self.view {
            View::Cuts => self.layers.unwrap_or(256) + 64,
            View::Depth => self.depths.len() as u64,
            View::ImageSizes => self.sizes.len() as u64,
        };
        let cells = (self.models.len() as u64)
            .saturating_mul(rows)
            .saturating_mul(self.links.len() as u64 + 8);
        crate::work::within(
            "table cells",
            cells,
            crate::work::MAX_TRANSFER_CELLS,
            allow_large,
        )
        .map_err(|e| e.context("--links × models × rows"))
    }
}

pub fn transfer_report(q: &TransferQuery, collapse: bool) -> Result<TransferReport, InputError> {
    let mut tables = Vec::new();
    let mut notes = Vec::new();
    let mut models = Vec::new();
    for name in &q.models {
        match crate::catalog::builtin_model(name) {
            Some(m) => models.push(m),
            None if name.ends_with(".json") || name.contains('/') => {
                match crate::catalog::load_hf_config(std::path::Path::new(name))? {
                    crate::catalog::HfModel::Model(m) => models.push(*m),
                    crate::catalog::HfModel::VisionOnly { name, vit, tokens } => {
                        // A vision encoder alone: only cuts inside it exist.
                        let mut img = Vec::new();
                        for &(w, h) in &q.images {
                            img.push(tokens.tokens(w, h)?);
                        }
                        if q.view != View::Cuts {
                            return Err(InputError::new(format!(
                                "{name} is a vision encoder alone: only `--view cuts` applies"
                            )));
                        }
                        let rows = vision_layer_bytes(&vit, VisionTaps::default(), &img, q.dtype);
                        let mut t = Table::new(&["model", "cut", "bytes"]);
                        for (cut, bytes) in rows {
                            t.push(vec![
                                Value::Str(name.clone()),
                                Value::Str(cut),
                                Value::U64(bytes),
                            ]);
                        }
                        notes.push(format!("{name}: a vision encoder alone (no language model): only cuts inside the encoder"));
                        tables.push(t);
                    }
                }
            }
            // Not built in and not a path: resolving gives the error with suggestions.
            None => models.push(crate::catalog::resolve_model(name)?),
        }
    }
    for m in &mut models {
        if let Some(l) = q.layers {
            m.llm = m.llm.with_layers(l);
        }
    }
    match q.view {
        View::Cuts => {
            for m in &models {
                let images = if m.vision.is_some() {
                    q.images.as_slice()
                } else {
                    &[]
                };
                let shape = request_shape(
                    m,
                    images,
                    q.prompt_tokens,
                    q.visual_tokens,
                    q.context_tokens,
                    q.output_tokens,
                    q.dtype,
                )?;
                let c = cuts(m, &shape, &q.links);
                notes.push(format!(
                    "{}: {} image(s), {} visual + {} text tokens, context {} tokens, {} output tokens, {}",
                    m.name,
                    shape.images.len(),
                    shape.visual_tokens,
                    q.prompt_tokens,
                    shape.context_tokens,
                    q.output_tokens,
                    q.dtype.name()
                ));
                notes.extend(
                    findings(m, &c)
                        .into_iter()
                        .map(|n| format!("{}: {n}", m.name)),
                );
                tables.push(cuts_table(&m.name, &c, &q.links, collapse));
            }
        }
        View::Depth => {
            for m in &models {
                let shape = request_shape(
                    m,
                    &q.images,
                    q.prompt_tokens,
                    q.visual_tokens,
                    q.context_tokens,
                    q.output_tokens,
                    q.dtype,
                )?;
                if shape.visual_tokens == 0 {
                    return Err(InputError::new(format!(
                        "{}: the depth sweep needs visual tokens (give --image or --visual-tokens)",
                        m.name
                    )));
                }
                // The embedding is the feature rows (without Pixtral's breaks or Gemma's
                // begin/end tokens); a forced --visual-tokens count with no image is taken as rows.
                let features = if shape.images.is_empty() {
                    shape.visual_tokens
                } else {
                    shape.images.iter().map(|i| i.feature_tokens).sum()
                };
                tables.push(depth_table(
                    std::slice::from_ref(m),
                    &q.depths,
                    shape.context_tokens,
                    features,
                    q.dtype,
                ));
                // kv_width is 2 · n_kv · d_head, or an MLA latent's kv_lora_rank + qk_rope_head_dim.
                let per_layer = (m.llm.kv_width() as f64 / m.llm.hidden as f64)
                    * shape.context_tokens as f64
                    / features as f64;
                let cross = m.llm.cross_attention_layers();
                notes.push(match m.llm.sliding {
                    _ if cross > 0 => format!(
                        "{}: s = {}, N_v = {}: {cross} of {} layers attend to the image, not the context: R = 2 · (n_kv · d_head / d) · \
                         ((L − {cross}) · s / N_v + {cross}), at least {:.3} however few the text tokens",
                        m.name,
                        shape.context_tokens,
                        features,
                        m.llm.layers,
                        2.0 * cross as f64 * m.llm.kv_dim() as f64 / m.llm.hidden as f64
                    ),
                    Some(w) if shape.context_tokens >= w.window => format!(
                        "{}: s = {}, N_v = {}: {} of {} layers keep only the last {} tokens{}, so R is below \
                         2L · (n_kv · d_head / d) · (s / N_v) ({:.3} per layer) and stops growing with s in those layers",
                        m.name,
                        shape.context_tokens,
                        features,
                        w.layers,
                        m.llm.layers,
                        w.window - 1,
                        match w.kind {
                            WindowKind::Sliding => "",
                            WindowKind::Chunked => " (chunked attention, as transformers caches it)",
                        },
                        per_layer
                    ),
                    _ if m.llm.mla.is_some() => {
                        let mla = m.llm.mla.expect("matched");
                        format!(
                            "{}: multi-head latent attention caches one latent of {} + {} values a token and layer (per-head keys and \
                             values would be {}): R = L · ((kv_lora_rank + qk_rope_head_dim) / d) · (s / N_v) with s = {}, N_v = {}: \
                             linear in L, {:.3} per layer, {:.1}× less than the expanded heads'",
                            m.name,
                            mla.kv_lora_rank,
                            mla.qk_rope_head_dim,
                            mla.expanded_width(m.llm.heads),
                            shape.context_tokens,
                            features,
                            per_layer,
                            mla.expanded_width(m.llm.heads) as f64 / mla.latent_width() as f64
                        )
                    }
                    _ => format!(
                        "{}: R = 2L · (n_kv · d_head / d) · (s / N_v) with s = {}, N_v = {}: linear in L, {:.3} per layer",
                        m.name, shape.context_tokens, features, per_layer
                    ),
                });
            }
        }
        View::ImageSizes => {
            for m in &models {
                if m.vision.is_none() {
                    return Err(InputError::new(format!(
                        "{} is text-only: it has no image sizes",
                        m.name
                    )));
                }
                tables.push(image_sizes_table(m, &q.sizes, q.dtype)?);
            }
        }
    }
    Ok(TransferReport { tables, notes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{builtin_model, link_by_name};

    fn llava_shape(m: &ModelSpec) -> RequestShape {
        request_shape(m, &[(336, 336)], 128, None, None, 128, Dtype::Bf16).unwrap()
    }

    #[test]
    fn llava_7b_reproduces_the_paper_numbers() {
        let m = builtin_model("llava-1.5-7b").unwrap();
        let shape = llava_shape(&m);
        assert_eq!((shape.visual_tokens, shape.context_tokens), (576, 704));
        let c = cuts(&m, &shape, &[link_by_name("pcie4").unwrap()]);
        let get = |k| c.iter().find(|x| x.kind == k).unwrap();
        assert_eq!(get(CutKind::ModalityBoundary).bytes, 4_718_592);
        assert_eq!(get(CutKind::PrefillDecode).bytes, 369_098_752);
        let r = get(CutKind::PrefillDecode).ratio_to_modality.unwrap();
        assert_eq!(format!("{r:.1}"), "78.2");
        // Pre-projector: 576 × 1024 × 2; inside the ViT: 577 tokens (with CLS) × 1024 × 2.
        assert_eq!(get(CutKind::PreProjector).bytes, 1_179_648);
        assert_eq!(
            c.iter().filter(|x| x.kind == CutKind::VisionLayer).count(),
            23
        );
        assert!(
            c.iter()
                .filter(|x| x.kind == CutKind::VisionLayer)
                .all(|x| x.bytes == 577 * 1024 * 2)
        );
        assert!(get(CutKind::PreProjector).smallest_stage_based);
        // A pipeline cut inside the LLM: 704 hidden states at prefill, one per decode step.
        let l1 = c.iter().find(|x| x.name == "llm.layer1").unwrap();
        assert_eq!(
            (l1.bytes_per_prefill, l1.bytes_per_decode_step),
            (Some(704 * 8192), Some(8192))
        );
        assert!(!l1.stage_based);
        let notes = findings(&m, &c).join("\n");
        assert!(notes.contains("pre-projector cut (1,179,648 B) is smaller than the modality boundary (4,718,592 B)"), "{notes}");
    }

    #[test]
    fn mllama_ships_cross_attention_kv_and_its_vit_cut_wins() {
        let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/hf-configs/llama-3.2-11b-vision-instruct.json");
        let m = crate::catalog::resolve_model(p.to_str().unwrap()).unwrap();
        let shape = request_shape(&m, &[(640, 480)], 20, None, None, 128, Dtype::Bf16).unwrap();
        // One <|image|> token in the context; 4 tiles × 1601 = 6,404 vision states.
        assert_eq!((shape.visual_tokens, shape.context_tokens), (1, 21));
        let c = cuts(&m, &shape, &[]);
        let get = |name: &str| c.iter().find(|x| x.name == name).unwrap().bytes;
        // 6404 × 1280 × 2 until hidden state 3 is tapped; after layer 30 the last state and all
        // five taps: 6 × 16,394,240, as wide as the projector's 7680-value input.
        assert_eq!(get("vision.layer2"), 16_394_240);
        assert_eq!(get("vision.layer3"), 2 * 16_394_240);
        assert_eq!(get("vision.layer40"), 6 * 16_394_240);
        assert_eq!(get("pre_projector"), 6404 * 7680 * 2);
        assert_eq!(get("modality_boundary"), 6404 * 4096 * 2);
        // Prefill→decode: 32 self-attention layers × 4096 B × 21 tokens, plus 8 cross layers ×
        // 2 · 8 · 128 · 2 B × 6404 states.
        assert_eq!(get("prefill_decode_kv"), 32 * 4096 * 21 + 8 * 26_230_784);
        // Before the last cross layer (index 38) a pipeline cut carries the vision states too.
        let at = |name: &str| c.iter().find(|x| x.name == name).unwrap().bytes_per_prefill;
        assert_eq!(at("llm.layer38"), Some(21 * 8192 + 6404 * 8192));
        assert_eq!(at("llm.layer39"), Some(21 * 8192));
        let best: Vec<_> = c
            .iter()
            .filter(|x| x.smallest_stage_based)
            .map(|x| &x.name)
            .collect();
        assert_eq!(best, ["vision.layer1", "vision.layer2"]);
        let notes = findings(&m, &c).join("\n");
        assert!(notes.contains("R = D_KV / D_emb = 4.1"), "{notes}");
        assert!(
            notes.contains("8 cross-attention layers") && notes.contains("4.0×"),
            "{notes}"
        );
    }

    #[test]
    fn r_grows_linearly_with_depth_and_shrinks_with_gqa() {
        let mut m = builtin_model("llava-1.5-7b").unwrap();
        m.llm.layers = 80;
        assert_eq!(
            format!("{:.1}", kv_to_embedding_ratio(&m, 704, 576, Dtype::Bf16)),
            "195.6"
        );
        for l in [8, 16, 32, 64] {
            m.llm.layers = l;
            let r = kv_to_embedding_ratio(&m, 704, 576, Dtype::Bf16);
            assert!((r / l as f64 - 78.2222 / 32.0).abs() < 1e-3);
        }
        let q = builtin_model("qwen2.5-vl-7b").unwrap();
        assert_eq!(
            format!("{:.1}", kv_to_embedding_ratio(&q, 704, 576, Dtype::Bf16)),
            "9.8"
        );
    }

    #[test]
    fn qwen_640x480_is_391_tokens_and_modality_wins_over_the_vit() {
        let q = builtin_model("qwen2.5-vl-7b").unwrap();
        let shape = request_shape(&q, &[(640, 480)], 20, None, None, 128, Dtype::Bf16).unwrap();
        assert_eq!(shape.visual_tokens, 391);
        let c = cuts(&q, &shape, &[]);
        // ViT width 1280 on 4× the tokens vs 3584 after the merger: the modality boundary is smaller.
        let best = c.iter().find(|x| x.smallest_stage_based).unwrap();
        assert_eq!(best.kind, CutKind::ModalityBoundary);
        assert_eq!(best.bytes, 391 * 3584 * 2);
    }

    #[test]
    fn gemma_and_pixtral_ship_feature_rows_and_the_pre_projector_cut_wins_or_loses() {
        let fixture = |f: &str| {
            let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures/hf-configs")
                .join(f);
            crate::catalog::resolve_model(p.to_str().unwrap()).unwrap()
        };
        let bytes = |m: &ModelSpec, kind: CutKind| {
            let shape = request_shape(m, &[(640, 480)], 20, None, None, 128, Dtype::Bf16).unwrap();
            cuts(m, &shape, &[])
                .into_iter()
                .find(|c| c.kind == kind)
                .unwrap()
                .bytes
        };
        let g = fixture("gemma-3-4b-it.json");
        // 256 pooled rows × 2560 × 2 B; before the pool, 64² patches × 1152 × 2 B.
        assert_eq!(bytes(&g, CutKind::ModalityBoundary), 256 * 2560 * 2);
        assert_eq!(bytes(&g, CutKind::PreProjector), 4096 * 1152 * 2);
        // 278 tokens (258 + 20) are under the window: 34 layers · 4 KiB each.
        assert_eq!(bytes(&g, CutKind::PrefillDecode), 34 * 4096 * 278);
        let q = fixture("qwen3-vl-4b-instruct.json");
        // 640×480: 40 × 30 patches of 16 px (1,200 × 1024 wide), 300 merged tokens of 2560. The
        // three DeepStack taps (after ViT layers 6, 12, 18) cross with everything after them.
        assert_eq!(bytes(&q, CutKind::ModalityBoundary), 4 * 300 * 2560 * 2);
        assert_eq!(bytes(&q, CutKind::PreProjector), 4 * 1200 * 1024 * 2);
        let shape = request_shape(&q, &[(640, 480)], 20, None, None, 128, Dtype::Bf16).unwrap();
        let c = cuts(&q, &shape, &[]);
        let at = |name: &str| c.iter().find(|c| c.name == name).unwrap();
        assert_eq!(at("vision.layer5").bytes, 1200 * 1024 * 2);
        assert_eq!(at("vision.layer6").bytes, 2 * 1200 * 1024 * 2);
        assert!(at("vision.layer5").smallest_stage_based);
        // After LLM layer 1, two taps' features are still to be added.
        assert_eq!(
            at("llm.layer1").bytes_per_prefill,
            Some(320 * 2560 * 2 + 2 * 300 * 2560 * 2)
        );
        let p = fixture("pixtral-12b.json");
        // 1,200 feature rows (not the 1,230 tokens with breaks) × 5120 × 2 B.
        assert_eq!(bytes(&p, CutKind::ModalityBoundary), 1200 * 5120 * 2);
        assert_eq!(bytes(&p, CutKind::PreProjector), 1200 * 1024 * 2);
    }

    #[test]
    fn dtype_scales_every_cut() {
        let m = builtin_model("llava-1.5-7b").unwrap();
        let bf16 = cuts(&m, &llava_shape(&m), &[]);
        let fp8 = cuts(
            &m,
            &RequestShape {
                dtype: Dtype::Fp8,
                ..llava_shape(&m)
            },
            &[],
        );
        for (a, b) in bf16.iter().zip(&fp8) {
            assert_eq!(a.bytes, 2 * b.bytes, "{}", a.name);
        }
    }

    #[test]
    fn absurd_shapes_are_refused() {
        let m = builtin_model("llava-1.5-7b").unwrap();
        assert!(request_shape(&m, &[], 0, None, None, 10, Dtype::Bf16).is_err());
        assert!(request_shape(&m, &[(0, 480)], 10, None, None, 10, Dtype::Bf16).is_err());
        assert!(request_shape(&m, &[], 10, None, Some(u64::MAX / 4), 10, Dtype::Bf16).is_err());
        assert!(request_shape(&m, &[], 10, None, None, 0, Dtype::Bf16).is_err());
    }
}
