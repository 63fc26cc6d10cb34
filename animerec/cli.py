"""``animerec``: one recommendation query against a stored or pretrained model.

    animerec similar-anime "Cowboy Bebop" -n 10 --types TV
    animerec similar-users 1234
    animerec recommend 1234 --genres Action Comedy --min-rating 7
    animerec recommend --ratings my_animelist.xml.gz -n 20        # anyone: a MAL export or anime_id,rating CSV
    animerec recommend --likes "Cowboy Bebop" "Steins;Gate"
    animerec recommend --anilist-user NAME                         # a public AniList list, fetched
    MAL_CLIENT_ID=... animerec recommend --mal-user NAME           # a public MyAnimeList list, fetched
    animerec web --model model:best                                # a web page on http://127.0.0.1:8080
    animerec recommend 1234 --model my-team/anime-recommender/model:best   # a W&B model

The model is ``--model`` (default ``model:latest`` in ``--store``, default ``./artifacts``): a
local reference, a model folder, or a W&B reference (fetched once, then cached in the store).
``--json`` prints the answer as the MLflow server would.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import textwrap
from typing import Sequence

import pandas as pd

from animerec.artifacts import ArtifactStore
from animerec.config import ItemFilter, filter_form
from animerec.errors import UserError
from animerec.pretrained import resolve_model, resolve_wandb_mode
from animerec.profiles import read_list
from animerec.recommenders import FavoriteRule
from animerec.service import FILTER_FIELDS, KINDS, RecommendationService
from animerec.view import fitted, view

logger = logging.getLogger(__name__)

COMMANDS = {kind.command: kind.name for kind in KINDS.values()}


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", type=int, default=10, help="how many results (default 10)")
    _add_filters(parser)
    parser.add_argument("--exclude", nargs="+", type=int, default=[], metavar="MAL_ID",
                        help="anime you are not interested in: never recommended")
    _add_model_options(parser)
    parser.add_argument("--json", action="store_true", help="print the answer as JSON (with each MyAnimeList link "
                                                             "and the anime each reason cites)")
    parser.add_argument("--wide", action="store_true", help="every column, however wide (default: the table fits "
                                                             "the terminal: title, why, score, MAL link or ID)")


FLAGS = {"popularity_damping": ("--hidden-gems", "BETA")}  # flags named for fans rather than after the field


def _add_filters(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`ItemFilter` field, with its rule's choices, help and default."""
    defaults = ItemFilter()
    for name, field in ItemFilter.model_fields.items():
        flag, metavar = FLAGS.get(name, ("--" + name.replace("_", "-"), None))
        default, (kind, choices) = getattr(defaults, name), filter_form(name)
        text = field.description + (f": {', '.join(choices)}" if kind == "list" and choices else "")
        text += f" (default {default})" if default not in (None, [], False) else ""
        if kind == "list":
            parser.add_argument(flag, dest=name, nargs="+", default=default, metavar=metavar or name[:-1].upper(),
                                help=text)
        elif kind == "bool":
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction if default else "store_true",
                                default=default, help=text)
        else:
            parser.add_argument(flag, dest=name, type={"int": int, "float": float}.get(kind, str), default=default,
                                choices=choices, metavar=metavar, help=text)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="model:latest",
                        help="model to use: model:latest (default), model:best, model:v3, a folder, or a W&B "
                             "reference entity/project/model:alias")
    parser.add_argument("--store", default=os.environ.get("ANIMEREC_STORE", "artifacts"),
                        help="local artifact store (default ./artifacts, or $ANIMEREC_STORE)")
    parser.add_argument("--wandb-project", default="anime-recommender", help="W&B project for short W&B references")
    parser.add_argument("--wandb-entity", default=None, help="W&B entity for short W&B references")


def _add_person(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user_id", type=int, nargs="?", help="a user ID from the training data")
    parser.add_argument("--ratings", metavar="FILE",
                        help="anyone's list instead of a user ID: a MyAnimeList XML export (.xml or .xml.gz) or a CSV "
                             "with columns anime_id,rating (1-10; 0 or empty = listed, not rated); nothing on it is "
                             "recommended back")
    parser.add_argument("--likes", nargs="+", metavar="TITLE", help="liked titles instead of a user ID")
    parser.add_argument("--mal-user", metavar="NAME", help="a MyAnimeList username: their public list, fetched "
                        "(needs a MAL API client ID in MAL_CLIENT_ID)")
    parser.add_argument("--anilist-user", metavar="NAME", help="an AniList username: their public list, fetched")


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in the project's shape: ``error: <command>: <what>`` and status 2."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="animerec",
        description="Anime recommendations from a trained collaborative-filtering model.",
        epilog="Run 'animerec <command> --help' for a command's options.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command", parser_class=_Parser)
    anime = commands.add_parser("similar-anime", help="anime whose embeddings are closest to one anime",
                                description="Anime most similar to one anime (cosine between anime embeddings).")
    anime.add_argument("anime", nargs="?", help="a title (MAL name, English or Japanese name; case, spacing and "
                                                "punctuation are ignored, clear misspellings are matched)")
    anime.add_argument("--id", type=int, dest="anime_id", metavar="MAL_ID", help="ask by MAL ID instead of a title")
    _add_common(anime)
    users = commands.add_parser("similar-users", help="users most like one user, and what they love",
                                description="Users closest to one user (cosine between user embeddings), the "
                                            "user's favourite genres, and anime the similar users love.")
    _add_person(users)
    users.add_argument("--favorite-fraction", type=float, default=FavoriteRule.fraction, help="a favourite is among "
                       f"the user's top FRACTION of ratings, ties together (default {FavoriteRule.fraction:g})")
    users.add_argument("--favorite-min-rating", type=float, default=FavoriteRule.min_rating,
                       help=f"and rated at least this (default {FavoriteRule.min_rating:g})")
    _add_common(users)
    recommend = commands.add_parser("recommend", help="anime for a user, or for anyone's list",
                                    description="The model's recommendations among anime the user has not rated: "
                                                "by its ranking head when it has one (model=best), else by predicted "
                                                "rating. Anyone can ask with --ratings FILE, --likes TITLES, "
                                                "--mal-user NAME or --anilist-user NAME.")
    _add_person(recommend)
    web = commands.add_parser("web", help="a web page for all three recommenders and the model card",
                              description="Serve a web page over the model: similar anime, recommendations for an "
                                          "uploaded MyAnimeList export, a CSV or liked titles, similar users, filters, "
                                          "and the model card. Binds to 127.0.0.1 unless --host says otherwise.")
    web.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    web.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    recommend.add_argument("--min-rating", type=float, help="lowest predicted rating (1-10) to keep")
    recommend.add_argument("--max-rating", type=float, help="highest predicted rating (1-10) to keep")
    _add_common(recommend)
    _add_model_options(web)
    return parser


def request_from(args: argparse.Namespace) -> dict:
    if args.command == "similar-anime":
        if (args.anime is None) == (args.anime_id is None):
            raise UserError("similar-anime needs a title or --id MAL_ID (one of them).")
        query = args.anime_id if args.anime_id is not None else args.anime
        request = {"query": query}
    else:
        given = [what for what, value in (("a user ID", args.user_id), ("--ratings", args.ratings),
                                          ("--likes", args.likes), ("--mal-user", args.mal_user),
                                          ("--anilist-user", args.anilist_user)) if value is not None]
        if len(given) != 1:
            raise UserError(f"{args.command} needs one of: a user ID, --ratings FILE, --likes TITLE..., --mal-user "
                            f"NAME or --anilist-user NAME (got {' and '.join(given) if given else 'none'}).")
        if args.ratings is not None:
            request = {"ratings": read_list(args.ratings)}
        elif args.user_id is not None:
            request = {"query": args.user_id}
        else:
            request = {"likes": args.likes, "mal_user": args.mal_user, "anilist_user": args.anilist_user}
    request.update({"kind": COMMANDS[args.command], "n": args.n, "exclude": args.exclude,
                    **{name: getattr(args, name) for name in FILTER_FIELDS}})
    if args.command == "recommend":
        request.update(min_rating=args.min_rating, max_rating=args.max_rating)
    return request


def print_answer(answer: dict, wide: bool = False, width: int | None = None) -> None:
    """The answer as text: the same heading, notes and tables as the page (:mod:`animerec.view`); each table fits
    ``width`` (the terminal's) unless ``wide``, which shows every column."""
    shown = view(answer)
    width = width or shutil.get_terminal_size((100, 24)).columns
    print(shown.heading + "\n")
    for note in shown.notes:
        print(textwrap.fill(note, width) + "\n")
    for table in shown.tables:
        frame = pd.DataFrame(table.rows).drop(columns=["because"], errors="ignore")  # in "reason"; --json has it
        if "reason" in frame:  # why, right after the title
            frame.insert(2, "reason", frame.pop("reason"))
        caption = textwrap.fill(table.caption, width) + "\n" if table.caption else ""
        print(caption + (frame.to_string(index=False) if wide else fitted(frame, width)) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # its retry warnings: the error after them says it all

    try:
        version = resolve_model(args.model, ArtifactStore(args.store), wandb_mode=resolve_wandb_mode(None),
                                project=args.wandb_project, entity=args.wandb_entity)
        rule = (FavoriteRule(args.favorite_fraction, args.favorite_min_rating) if args.command == "similar-users"
                else FavoriteRule())
        service = RecommendationService.from_path(version.path, favorites=rule)
        if args.command == "web":
            from animerec.web import serve

            serve(service, version.path, version.ref, args.host, args.port)
            return 0
        answer = service.answer(request_from(args))
    except UserError as err:
        print(f"error: animerec {args.command}: {err}", file=sys.stderr)
        return 2
    try:
        if args.json:
            print(json.dumps(answer, indent=2))
        else:
            print_answer(answer, wide=args.wide)
        sys.stdout.flush()
    except BrokenPipeError:  # `animerec ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
