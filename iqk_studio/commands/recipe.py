"""`iqk-studio-cli recipe`: export a recipe as a llama-quantize command line (ik_llama.cpp or
mainline), import a pasted command line / `custom="..."` block, list the bundled library."""

from __future__ import annotations

import sys
from pathlib import Path

from iqk_studio.cli import CliError
from iqk_studio.commands._checks import check_output, check_text_file
from iqk_studio.commands.plan import add_recipe_options, recipe_from_args
from iqk_studio.recipe import library
from iqk_studio.recipe.cmdline import export_ik, export_mainline, import_text, placement_args
from iqk_studio.recipe.lint import lint_options, lint_rules
from iqk_studio.recipe.published import points_of
from iqk_studio.recipe.textfile import dumps, save


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)
    e = sub.add_parser("export", help="print the llama-quantize command line of a recipe")
    e.add_argument("--format", choices=("ik", "mainline"), default="ik")
    e.add_argument("--base", help="llama-quantize type (overrides the recipe's)")
    e.add_argument("--one-option-per-rule", action="store_true",
                   help="ik: one --custom-q per rule instead of one comma-joined option")
    e.add_argument("--program", default="llama-quantize", help="path of the llama-quantize binary")
    e.add_argument("--single-line", action="store_true", help="no backslash-newlines")
    add_recipe_options(e)
    e.add_argument("items", nargs="+", metavar="[REGEX=TYPE ...] MODEL_IN MODEL_OUT")
    i = sub.add_parser("import", help="read a pasted command line or custom= block, write a recipe")
    i.add_argument("source", nargs="?", default="-", help="text file, or - for stdin (default)")
    i.add_argument("-o", "--output", help="recipe file to write (default: stdout)")
    i.add_argument("--base", help="llama-quantize type when the text has no command line")
    sub.add_parser("list", help="the bundled library recipes with their published size and PPL")


def _export(args) -> int:
    if len(args.items) < 2:
        raise ValueError("give MODEL_IN and MODEL_OUT")
    *rules, model_in, model_out = args.items
    for r in rules:
        if "=" not in r:
            raise ValueError(f"{r!r} is not a regex=type rule")
    args.custom_q = list(args.custom_q) + rules
    recipe = recipe_from_args(args, args.base)
    for lint in lint_rules(recipe) + lint_options(recipe):
        print(f"# {lint}", file=sys.stderr)
    if args.format == "ik":
        print(export_ik(recipe, model_in, model_out, program=args.program,
                        one_option_per_rule=args.one_option_per_rule,
                        multiline=not args.single_line))
    else:
        text, lints = export_mainline(recipe, model_in, model_out, program=args.program,
                                      multiline=not args.single_line)
        for lint in lints:
            print(f"# {lint}", file=sys.stderr)
        print(text)
    if recipe.placement:
        print(f"# run with: {placement_args(recipe)}", file=sys.stderr)
    return 0


def _import(args) -> int:
    if args.source != "-":
        check_text_file(args.source, "recipe import")
        if args.output:
            check_output(args.output, {"source text": args.source})
    try:
        text = sys.stdin.read() if args.source == "-" else Path(args.source).read_text()
    except UnicodeDecodeError as e:
        raise CliError(f"{args.source}: not UTF-8 text (byte {e.start})") from None
    recipe, lints = import_text(text, args.base)
    for lint in lints + lint_rules(recipe) + lint_options(recipe):
        print(f"# {lint}", file=sys.stderr)
    if args.output:
        save(recipe, args.output)
        print(f"wrote {args.output}: base {recipe.base}, {len(recipe.rules)} rule(s)",
              file=sys.stderr)
    else:
        sys.stdout.write(dumps(recipe))
    return 0


def run(args) -> int:
    if args.recipe_command == "export":
        return _export(args)
    if args.recipe_command == "import":
        return _import(args)
    for name in library.names():
        r = library.load_named(name)
        note = r.note.splitlines()[0] if r.note else ""
        pts = points_of(r, name)
        print(f"{name:<20} {r.base:<7} {len(r.rules):>2} rule(s)  {_published(pts[:1]):<28} {note}")
        for p in pts[1:]:
            print(f"{'':<40}{_published([p]):<28} {p.importance}")
    return 0


def _published(pts) -> str:
    """'10.229 GiB  PPL 9.3908' of a recipe's first published point ('' when none)."""
    if not pts:
        return ""
    p = pts[0]
    return f"{p.size_gib:.3f} GiB" + (f"  PPL {p.ppl:g}" if p.ppl is not None else "")

