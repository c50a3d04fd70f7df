"""mini-lm train-tokenizer --files corpus/zh --vocab-size 8000 --output runs/tok"""

from __future__ import annotations

import argparse
import logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", nargs="+", required=True, help="corpus files, folders, globs or hub names")
    parser.add_argument("--vocab-size", type=int, required=True)
    parser.add_argument("--output", required=True, help="directory for the HF tokenizer files")
    parser.add_argument(
        "--text-field",
        default="text",
        help="text field of json/csv/parquet data (a list of strings is joined)",
    )
    parser.add_argument(
        "--text-template", help="build documents from several fields: '{title}\\n{paragraphs}'"
    )
    parser.add_argument("--text-joiner", default="\n", help="joins a list-valued field (default: newline)")
    parser.add_argument(
        "--sample-by",
        default="line",
        choices=["line", "paragraph", "document"],
        help="how .txt files split into documents",
    )
    parser.add_argument("--document-separator", help="split .txt files at this string (e.g. <|endoftext|>)")
    parser.add_argument(
        "--encoding", help="file encoding (default: UTF-8, else GB18030/Big5/UTF-16 detected)"
    )
    parser.add_argument("--max-documents", type=int, default=None, help="train on the first N documents")
    parser.add_argument("--min-frequency", type=int, default=2)
    parser.add_argument(
        "--no-split-han",
        dest="split_han",
        action="store_false",
        help="let merges span Chinese characters (default: one pre-token per character)",
    )


def run(args: argparse.Namespace) -> int:
    from ..data.corpus import load_corpus
    from ..tokenization import train_bpe_tokenizer

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    docs = load_corpus(
        args.files,
        text_field=args.text_field,
        text_template=args.text_template,
        text_joiner=args.text_joiner,
        sample_by=args.sample_by,
        document_separator=args.document_separator,
        encoding=args.encoding,
    )
    if args.max_documents:
        docs = docs.select(range(min(args.max_documents, len(docs))))
    tok = train_bpe_tokenizer(
        docs["text"], args.vocab_size, args.output, min_frequency=args.min_frequency, split_han=args.split_han
    )
    sample = docs[0]["text"][:40]
    print(f"tokenizer: {len(tok)} tokens -> {args.output}")
    print(f"sample: {sample!r} -> {tok(sample)['input_ids'][:20]}")
    return 0
