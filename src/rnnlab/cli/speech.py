"""``rnnlab train speech`` and ``rnnlab transcribe``: thin wrappers over ``rnnlab.tasks.speech``.

``rnnlab evaluate RUN`` is the training core's command; for a speech run it reaches
:func:`evaluate_speech` (``--split test`` for the split's test recordings or strings).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from rnnlab.cli.train import (TrainArgs, cell_option_flag, cell_options_from_flags, print_train_json,
                              register_evaluator, with_train_options)
from rnnlab.errors import ConfigError, DataError, expected


def evaluate_speech(run_dir: Path, split: str, checkpoint: str, extra: list[str]) -> dict:
    """``rnnlab evaluate RUN [--split test]`` for a speech run: loss and accuracy (words) or DER and
    string accuracy (ctc: ``der``/``string_acc`` greedy, as training reports and selects on;
    ``beam_der``/``beam_string_acc`` with the run's prefix beam width ``beam``), and per speaker:
    ``acc[SPEAKER]`` (words: recordings right) or ``beam_digit_acc[SPEAKER]`` (ctc: the share of
    the reference digits the beam decoded right, on the edit alignment; insertions count in
    ``beam_der`` only, as they belong to no speaker's digit)."""
    from rnnlab.tasks.speech import load_speech_run  # lazy: keeps --help fast

    task, model = load_speech_run(run_dir, checkpoint)
    m = task.evaluate_detailed(model, split)
    out = {k: float(v) for k, v in m.items() if isinstance(v, (int, float)) and k not in ("n", "beam")}
    if "beam" in m:
        out["beam"] = int(m["beam"])
    out["n"] = int(m["n"])
    name = "acc" if task.config.mode == "words" else "beam_digit_acc"
    for spk, acc in m.get("per_speaker", {}).items():
        out[f"{name}[{spk}]"] = float(acc)
    return out


# The flags of `rnnlab train speech` that only a ctc run uses (--pretrain-words and --blank-bias are
# refused by SpeechConfig, whose check sees their values).
CTC_ONLY = ("train_strings", "valid_strings", "test_strings", "max_digits", "short_epochs", "string_noise", "beam")

# Flag parameter -> task config key, where they differ (checked against the run on --resume).
CONFIG_KEYS = {"feature_kind": "features.kind", "n_mels": "features.n_mels", "n_mfcc": "features.n_mfcc",
               "deltas": "features.deltas", "normalize": "features.normalize",
               "data_seed": "seed", "cell_option": "cell_options"}


def _features(kind: str, n_mels: int, n_mfcc: int, deltas: int, normalize: str) -> dict:
    return {"kind": kind, "n_mels": n_mels, "n_mfcc": n_mfcc, "deltas": deltas, "normalize": normalize}


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    register_evaluator("speech", evaluate_speech)

    @train_app.command("speech")
    @with_train_options
    def train_speech(
        dataset: str = typer.Option("fsdd", "--dataset", help="fsdd (the Free Spoken Digit Dataset), or none with --audio-dir (the default there)."),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="With --dataset: a local copy (default: the user cache, fetched if missing)."),
        audio_dir: Optional[Path] = typer.Option(None, "--audio-dir", help="Your recordings: {label}_{speaker}_{take}.wav, or labels from --labels."),
        labels: Optional[Path] = typer.Option(None, "--labels", help="With --audio-dir: a CSV with columns file,label\\[,speaker,take], files relative to --audio-dir; --split official needs take, --split speaker:NAME needs speaker."),
        split: str = typer.Option("official", "--split", help="official (takes 0-4 test) | speaker:NAME (that speaker is the test set)."),
        mode: str = typer.Option("words", "--mode", help="words (one label per recording) | ctc (connected strings, CTC loss)."),
        feature_kind: str = typer.Option("mfcc", "--features", help="mfcc | logmel."),
        n_mels: int = typer.Option(40, "--n-mels", help="Mel bands."),
        n_mfcc: int = typer.Option(13, "--n-mfcc", help="Cepstra (mfcc)."),
        deltas: int = typer.Option(2, "--deltas", help="0 | 1 | 2: add deltas and delta-deltas."),
        normalize: str = typer.Option("running", "--normalize", help="running (causal, streams) | utterance | none."),
        cell: str = typer.Option("lstm", "--cell", help="lstm | gru | rnn."),
        hidden_size: int = typer.Option(128, "--hidden-size", "--hidden", help="Hidden size."),
        num_layers: int = typer.Option(2, "--num-layers", "--layers", help="Recurrent layers."),
        bidirectional: Optional[bool] = typer.Option(None, "--bidirectional/--unidirectional", help="Read both directions (cannot stream) or one (default: ctc both, words one)."),
        frame_stack: Optional[int] = typer.Option(None, "--frame-stack", help="Feature frames per recurrent step (default: ctc 3, words 1)."),
        dropout: float = typer.Option(0.1, "--dropout", help="Between layers and before the head."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Default: ctc 16, words 32."),
        valid_frac: float = typer.Option(0.1, "--valid-frac", help="Training recordings held out for validation."),
        data_seed: int = typer.Option(0, "--data-seed", help="Seeds the validation part, batch order, strings and augmentation."),
        time_masks: int = typer.Option(2, "--time-masks", help="SpecAugment time masks per utterance (0 = off)."),
        time_mask_frames: int = typer.Option(10, "--time-mask-frames", help="Longest time mask, in frames."),
        freq_masks: int = typer.Option(2, "--freq-masks", help="SpecAugment frequency masks per utterance (0 = off)."),
        freq_mask_bands: int = typer.Option(4, "--freq-mask-bands", help="Widest frequency mask, in bands."),
        gain_db: float = typer.Option(6.0, "--gain-db", help="Random gain within +-this many dB (0 = off)."),
        noise_snr_db: float = typer.Option(0.0, "--noise-snr-db", help="Additive white noise at SNR in \\[this, this+20] dB (0 = off)."),
        speed: float = typer.Option(0.1, "--speed", help="Speed perturbation by a factor in \\[1-this, 1+this] (0 = off)."),
        train_strings: int = typer.Option(2000, "--train-strings", help="ctc: strings per epoch."),
        valid_strings: int = typer.Option(200, "--valid-strings", help="ctc: validation strings."),
        test_strings: int = typer.Option(300, "--test-strings", help="ctc: test strings."),
        max_digits: int = typer.Option(7, "--max-digits", help="ctc: longest string."),
        short_epochs: int = typer.Option(2, "--short-epochs", help="ctc: the first epochs draw shorter strings (epoch e: up to e+1 digits; 0 = off)."),
        pretrain_words: Optional[int] = typer.Option(None, "--pretrain-words", help="ctc: first updates on isolated words, the stack as a word classifier (default: unidirectional 150, bidirectional 0)."),
        blank_bias: Optional[float] = typer.Option(None, "--blank-bias", help="ctc: the blank output's initial bias (default: unidirectional 4, bidirectional 0)."),
        string_noise: str = typer.Option("", "--string-noise", help="ctc: background noise in strings: white | pink."),
        beam: int = typer.Option(8, "--beam", help="ctc: prefix beam width of the test scores beam_der and beam_string_acc (der and string_acc are greedy; 1 = greedy)."),
        cell_option: Optional[List[str]] = cell_option_flag(),
        as_json: bool = typer.Option(False, "--json", help="Print the results as one JSON object."),
        run: TrainArgs = None,
    ) -> None:
        """Train a speech recogniser: isolated words, or connected digits with CTC."""
        from rnnlab.tasks.speech import MODE_DEFAULTS, TRAIN_DEFAULTS, SpeechConfig, SpeechTask, direction_defaults  # lazy: keeps --help fast
        from rnnlab.train import load_run  # lazy: keeps --help fast

        def flags() -> dict:
            """The task config the flags describe, unchecked (on --resume no data is read)."""
            both = MODE_DEFAULTS.get(mode, {}).get("bidirectional") if bidirectional is None else bidirectional
            by_direction = direction_defaults(mode, both)
            return dict(
                mode=mode, dataset="" if (audio_dir is not None and "dataset" not in run.explicit) or dataset == "none" else dataset or "", data_dir=str(data_dir) if data_dir else "",
                audio_dir=str(audio_dir) if audio_dir else "", labels=str(labels) if labels else "", split=split,
                features=_features(feature_kind, n_mels, n_mfcc, deltas, normalize), cell=cell, hidden_size=hidden_size,
                num_layers=num_layers, dropout=dropout,
                **{k: MODE_DEFAULTS.get(mode, {}).get(k) if v is None else v
                   for k, v in (("bidirectional", bidirectional), ("frame_stack", frame_stack),
                                ("batch_size", batch_size))},
                valid_frac=valid_frac, seed=data_seed, time_masks=time_masks,
                time_mask_frames=time_mask_frames, freq_masks=freq_masks, freq_mask_bands=freq_mask_bands,
                gain_db=gain_db, noise_snr_db=noise_snr_db, speed=speed, train_strings=train_strings,
                valid_strings=valid_strings, test_strings=test_strings, max_digits=max_digits, short_epochs=short_epochs,
                string_noise=string_noise, beam=beam, cell_options=cell_options_from_flags(cell_option),
                **{k: by_direction[k] if v is None else v
                   for k, v in (("pretrain_words", pretrain_words), ("blank_bias", blank_bias))})

        def build() -> SpeechTask:
            return SpeechTask(SpeechConfig(**flags()))  # every data error is raised here, before any model is built

        if mode == "words" and run.resume_run is None:   # (a resumed run's mode is the run's, whatever --mode says)
            idle = [flag for name, (flag, _) in run.explicit.items() if name in CTC_ONLY]
            if idle:
                raise ConfigError(expected(", ".join(idle), "them only with --mode ctc (connected strings; a words "
                                           "run classifies each recording)", "them in words mode"))

        result = run.start(build, "speech", flags, CONFIG_KEYS, (*SpeechTask.data_keys, "data_dir"),   # (paths, compared absolute)
                           **TRAIN_DEFAULTS[mode if mode in TRAIN_DEFAULTS else "words"])
        if run.given.get("quiet") and not as_json:  # --json always prints its object
            return
        task, model, _ = load_run(result.run_dir)
        m = task.evaluate_detailed(model, "test")
        if as_json:  # the validation scores, and the test split's that the summary line prints
            test = {k: v for k, v in m.items() if isinstance(v, (int, float, dict)) and not isinstance(v, bool)}
            print_train_json(result, task.evaluate(model, "valid"), test=test)
            return
        if task.config.mode == "words":
            per = ", ".join(f"{k} {v:.4f}" for k, v in m["per_speaker"].items())
            print(f"speech: run {result.run_dir}, test split: accuracy {m['acc']:.4f} on {m['n']} recordings"
                  f" (per speaker: {per})")
        else:
            print(f"speech: run {result.run_dir}, {m['n']} test strings: greedy DER {m['der']:.4f}, string accuracy "
                  f"{m['string_acc']:.4f}; prefix beam {m['beam']}: DER {m['beam_der']:.4f}, string accuracy "
                  f"{m['beam_string_acc']:.4f}")

    @app.command("transcribe")
    def transcribe_cmd(
        ctx: typer.Context,
        run_dir: Path = typer.Argument(..., metavar="RUN", help="A speech run folder."),
        files: List[Path] = typer.Argument(..., metavar="FILE...", help="Audio files (WAV, FLAC, OGG; any rate)."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per file: text, score, per-token timings and scores."),
        stream: bool = typer.Option(False, "--stream", help="Run chunk by chunk (unidirectional models): partial results and the real-time factor."),
        chunk_ms: float = typer.Option(100.0, "--chunk-ms", help="With --stream: audio per chunk."),
        beam: Optional[int] = typer.Option(None, "--beam", help="ctc, offline: prefix beam width (default: the run's; 1 = greedy)."),
        checkpoint: str = typer.Option("best", "--checkpoint", help="best | latest | a checkpoint folder of the run."),
        threads: int = typer.Option(1, "--threads", help="torch threads (one suits batch-1 audio; more only contend; 0: torch's default)."),
    ) -> None:
        """Print what a speech run hears in each audio file.

        A file that cannot be read (missing, empty, not audio, too short) is one error line on
        stderr (a JSON object with "error" under --json) and the other files are still
        transcribed; the exit status is then 1 (an rnnlab error).
        """
        import torch  # lazy: keeps --help fast

        from rnnlab.tasks.speech import check_decoding_options, load_speech_run, stream_file, transcribe_file  # lazy: keeps --help fast

        # Flags that do not apply first, then (with the run read) values and flags its mode has no use for.
        if not stream and ctx.get_parameter_source("chunk_ms").name in ("COMMANDLINE", "ENVIRONMENT"):
            raise ConfigError(expected("--chunk-ms", "it only with --stream (offline transcription reads each file "
                                       "whole)", f"--chunk-ms {chunk_ms:g} without --stream"))
        if stream and beam is not None:
            raise ConfigError(expected("--beam", "no --beam with --stream (streaming decodes greedily, step by step)",
                                       f"--beam {beam}"))
        if threads < 0:
            raise ConfigError(expected("--threads", "an integer >= 0 (0: torch's default)", threads))
        if threads:
            torch.set_num_threads(threads)
        task, model = load_speech_run(run_dir, checkpoint)
        check_decoding_options(task, beam, chunk_ms if stream else None)   # before any file: one error, not one per file

        def transcribe_one(path: Path) -> None:
            """Print one file's transcription (offline, or chunk by chunk with ``stream``)."""
            if not stream:
                res = transcribe_file(task, model, path, beam)
                print(json.dumps(res) if as_json else f"{path}: {res['text']}", flush=True)
                return

            def partial(text: str, seconds: float) -> None:
                if not as_json:
                    print(f"{path}: {seconds:6.2f} s  {text}", flush=True)

            res = stream_file(task, model, path, chunk_ms=chunk_ms, on_partial=partial)
            res.pop("log_probs")
            if as_json:
                print(json.dumps(res), flush=True)
            else:
                print(f"{path}: {res['text']}  (real-time factor {res['rtf']:.4f}, {res['seconds']:.2f} s "
                      f"of audio, step backend {res['backend']})", flush=True)

        bad = 0
        for path in files:
            try:
                transcribe_one(path)
            except DataError as exc:
                if as_json:   # stdout keeps one object per file given, an unreadable one too
                    print(json.dumps({"file": str(path), "error": str(exc)}), flush=True)
                if len(files) == 1:
                    raise
                bad += 1
                print(f"rnnlab: error: {exc}", file=sys.stderr, flush=True)
        if bad:
            raise DataError(expected("transcribable audio files", f"all {len(files)}",
                                     f"{bad} left untranscribed (see above)"))

