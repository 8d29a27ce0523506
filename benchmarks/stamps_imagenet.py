"""Real photos with ImageNet labels that may be redistributed: Tux Paint's photographic stamps.

Debian's ``tuxpaint-stamps-default`` package (Tux Paint's stamp collection, GPL-2, copyright
Bill Kendrick and the Tux Paint contributors, see the package's ``copyright`` file) holds a few
hundred cut-out photographs of animals, fruit, instruments, tools and vehicles. :data:`LABELS`
names, by hand, the ImageNet-1k class of each stamp that is a photograph (not a drawing, not a
mirrored duplicate) of an object with an unambiguous ImageNet class: 120 of them, of 97
classes. Stamps whose
object has no ImageNet class (giraffe, deer, pigeon, ...) or several plausible ones (frogs,
rabbits, elephants, cars) are left out.

This script writes them as a flat ``folder:PATH`` dataset with ``labels.csv`` (WordNet ids):
each stamp composited onto white (its transparent background) and padded to a
square with white, at its own resolution (the stamps are small, 60-640 px on the longer side;
``evaluate`` resizes them to 224² like any image). Nothing is shipped: the photos are made from
the Debian package on the machine that runs the benchmark.

    python benchmarks/stamps_imagenet.py --out runs/stamps_imagenet            # apt-get download
    python benchmarks/stamps_imagenet.py --deb tuxpaint-stamps-default_*.deb --out DIR
    saliency-jax evaluate --dataset folder:runs/stamps_imagenet --model efficientnet_lite0
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np

PACKAGE = "tuxpaint-stamps-default"
STAMPS = "usr/share/tuxpaint/stamps"

LABELS: dict[str, tuple[int, str]] = {
    # stamp path (under the package's stamps folder): (ImageNet index, its class name)
    "animals/birds/chicken_profile.png": (8, "hen"),
    "animals/birds/hen.png": (8, "hen"),
    "animals/birds/rooster.png": (7, "cock"),
    "animals/birds/crowned_crane.png": (134, "crane bird"),
    "animals/birds/drake.png": (97, "drake"),
    "animals/birds/duck.png": (97, "drake"),
    "animals/birds/gander.png": (99, "goose"),
    "animals/birds/penguin.png": (145, "king penguin"),
    "animals/birds/magpie.png": (18, "magpie"),
    "animals/birds/ostrich.png": (9, "ostrich"),
    "animals/birds/peacock.png": (84, "peacock"),
    "animals/birds/pelican.png": (144, "pelican"),
    "animals/birds/pink_flamingo.png": (130, "flamingo"),
    "animals/birds/rainbow-lorikeet.png": (90, "lorikeet"),
    "animals/birds/tucan.png": (96, "toucan"),
    "animals/birds/vulture.png": (23, "vulture"),
    "animals/fish/clownfish.png": (393, "anemone fish"),
    "animals/fish/lionfish.png": (396, "lionfish"),
    "animals/fish/lobster.png": (123, "spiny lobster"),
    "animals/insects/Brown_slug.png": (114, "slug"),
    "animals/insects/Woodlouse.png": (126, "isopod"),
    "animals/insects/grasshopper.png": (311, "grasshopper"),
    "animals/insects/mantis.png": (315, "mantis"),
    "animals/lizards/iguana.png": (39, "common iguana"),
    "animals/mammals/apes/chimp.png": (367, "chimpanzee"),
    "animals/mammals/apes/gorilla.png": (366, "gorilla"),
    "animals/mammals/aquatic/orca.png": (148, "killer whale"),
    "animals/mammals/aquatic/otter.png": (360, "otter"),
    "animals/mammals/aquatic/sea_lion.png": (150, "sea lion"),
    "animals/mammals/badger.png": (362, "badger"),
    "animals/mammals/bears/bear.png": (294, "brown bear"),
    "animals/mammals/bears/european-bear.png": (294, "brown bear"),
    "animals/mammals/bears/toys/edward_bear.png": (850, "teddy"),
    "animals/mammals/bovines/bison.png": (347, "bison"),
    "animals/mammals/bovines/bull.png": (345, "ox"),
    "animals/mammals/bovines/cow.png": (345, "ox"),
    "animals/mammals/bovines/cow_white.png": (345, "ox"),
    "animals/mammals/bovines/zebu.png": (345, "ox"),
    "animals/mammals/bovines/ram.png": (348, "ram"),
    "animals/mammals/bovines/sheep.png": (348, "ram"),
    "animals/mammals/camel/dromedary.png": (354, "Arabian camel"),
    "animals/mammals/cats/lion.png": (291, "lion"),
    "animals/mammals/cats/lion-2.png": (291, "lion"),
    "animals/mammals/cats/tiger.png": (292, "tiger"),
    "animals/mammals/cats/tiger_sumatran.png": (292, "tiger"),
    "animals/mammals/dogs/dingo.png": (273, "dingo"),
    "animals/mammals/dogs/dog.png": (250, "Siberian husky"),
    "animals/mammals/dogs/fox.png": (277, "red fox"),
    "animals/mammals/equines/horse.png": (339, "sorrel"),
    "animals/mammals/equines/zebra.png": (340, "zebra"),
    "animals/mammals/hippopotamus.png": (344, "hippopotamus"),
    "animals/mammals/pig.png": (341, "hog"),
    "animals/mammals/pig_golden.png": (341, "hog"),
    "animals/mammals/pig_golden2.png": (341, "hog"),
    "animals/mammals/wildboar.png": (342, "wild boar"),
    "animals/mammals/rodents/beaver.png": (337, "beaver"),
    "animals/mammals/rodents/marmot.png": (336, "marmot"),
    "animals/mammals/rodents/squirrel.png": (335, "fox squirrel"),
    "animals/marsupials/kangaroo.png": (104, "wallaby"),
    "animals/marsupials/koala.png": (105, "koala"),
    "animals/marsupials/wombat.png": (106, "wombat"),
    "food/fruit/Strawberry2.png": (949, "strawberry"),
    "food/fruit/strawberry.png": (949, "strawberry"),
    "food/fruit/apple_granny_smith.png": (948, "Granny Smith"),
    "food/fruit/apple_green.png": (948, "Granny Smith"),
    "food/fruit/banana.png": (954, "banana"),
    "food/fruit/cherimoya.png": (956, "custard apple"),
    "food/fruit/lemon.png": (951, "lemon"),
    "food/fruit/orange.png": (950, "orange"),
    "food/fruit/mandarine.png": (950, "orange"),
    "food/fruit/orange_seville.png": (950, "orange"),
    "food/fruit/pineapple.png": (953, "pineapple"),
    "food/fruit/pomegranate.png": (957, "pomegranate"),
    "food/vegetables/broccoli.png": (937, "broccoli"),
    "food/vegetables/mushroom.png": (947, "mushroom"),
    "food/vegetables/pepper.png": (945, "bell pepper"),
    "food/vegetables/yellowpepper.png": (945, "bell pepper"),
    "plants/mushrooms/cep.png": (997, "bolete"),
    "plants/mushrooms/cep-1.png": (997, "bolete"),
    "plants/mushrooms/cep-2.png": (997, "bolete"),
    "hobbies/binoculars.png": (447, "binoculars"),
    "hobbies/camera_35mm.png": (759, "reflex camera"),
    "hobbies/music/brass/trumpet.png": (513, "cornet"),
    "hobbies/music/percussion/drum_tomtom_floor.png": (541, "drum"),
    "hobbies/music/percussion/drumkit.png": (541, "drum"),
    "hobbies/music/string/cello.png": (486, "cello"),
    "hobbies/music/string/guitar2.png": (546, "electric guitar"),
    "hobbies/music/string/guitar_electric.png": (546, "electric guitar"),
    "hobbies/music/string/guitar_electric_bass.png": (546, "electric guitar"),
    "hobbies/music/string/guitar_classical.png": (402, "acoustic guitar"),
    "hobbies/music/string/violin.png": (889, "violin"),
    "hobbies/music/wind/bassoon.png": (432, "bassoon"),
    "household/dishes/mug.png": (504, "coffee mug"),
    "household/dishes/pitcher_small.png": (725, "pitcher"),
    "household/dishes/teapot.png": (849, "teapot"),
    "household/garbagecan.png": (412, "ashcan"),
    "household/wheelie_bin.png": (412, "ashcan"),
    "household/toilet.png": (861, "toilet seat"),
    "household/tools/hammer.png": (587, "hammer"),
    "household/tools/paintbrush_large.png": (696, "paintbrush"),
    "household/tools/spade.png": (792, "shovel"),
    "medical/bandage_adhesive.png": (419, "Band Aid"),
    "medical/stethoscope.png": (823, "stethoscope"),
    "medical/syringe.png": (845, "syringe"),
    "military/vehicles/f22_raptor.png": (895, "warplane"),
    "sports/australian_rules_football.png": (768, "rugby ball"),
    "sports/basketball.png": (430, "basketball"),
    "sports/soccer.png": (805, "soccer ball"),
    "sports/tennis_ball.png": (852, "tennis ball"),
    "sports/tennis_racket.png": (752, "racket"),
    "town/uk_post_box.png": (637, "mailbox"),
    "town/usps_mailbox.png": (637, "mailbox"),
    "vehicles/7spoke256.png": (479, "car wheel"),
    "vehicles/auto/truck.png": (717, "pickup"),
    "vehicles/cycle/pink_tricycle.png": (870, "tricycle"),
    "vehicles/emergency/firetruck.png": (555, "fire engine"),
    "vehicles/flight/balloon360.png": (417, "balloon"),
    "vehicles/flight/planes/747.png": (404, "airliner"),
    "vehicles/garbagetruck.png": (569, "garbage truck"),
    "vehicles/race/indycar.png": (751, "racer"),
}


def check_labels() -> None:
    """Every entry's index has the class name it states (catches a mistyped index)."""
    from saliency_jax.models import imagenet_labels

    names = imagenet_labels.imagenet_class_names()
    wrong = {path: (i, name, names[i]) for path, (i, name) in LABELS.items() if names[i] != name}
    if wrong:
        raise ValueError(f"LABELS entries whose index is another class: {wrong}")


def _extract(deb: pathlib.Path, into: pathlib.Path) -> pathlib.Path:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    return into / STAMPS


def _download(into: pathlib.Path) -> pathlib.Path:
    """``apt-get download`` the package (Debian's registry) into ``into``; its path."""
    if shutil.which("apt-get") is None:
        raise SystemExit(f"apt-get not found: pass --deb with a downloaded {PACKAGE} package")
    subprocess.run(["apt-get", "download", PACKAGE], cwd=into, check=True)
    debs = sorted(into.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        raise SystemExit(f"apt-get download {PACKAGE} wrote no .deb in {into}")
    return debs[-1]


def square_on_white(rgba: np.ndarray) -> np.ndarray:
    """u8[h, w, 4] -> u8[n, n, 3], n = max(h, w): alpha-composited onto white, centred."""
    rgb = rgba[..., :3].astype(np.float32)
    alpha = rgba[..., 3:].astype(np.float32) / 255.0
    over = np.rint(rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    h, w = over.shape[:2]
    n = max(h, w)
    out = np.full((n, n, 3), 255, np.uint8)
    top, left = (n - h) // 2, (n - w) // 2
    out[top:top + h, left:left + w] = over
    return out


def write_folder(stamps: pathlib.Path, out: pathlib.Path) -> dict:
    """Write every stamp of :data:`LABELS` into ``out`` with ``labels.csv``; a summary dict.

    Flat, in an order shuffled once (numpy seed 0, the file names' numeric prefix), so the
    first ``n`` images of a partial run are a random sample of the classes rather than the
    first classes in WordNet order.
    """
    from PIL import Image

    from saliency_jax.models import imagenet_labels

    check_labels()
    wnids = imagenet_labels.imagenet_wordnet_ids()
    missing = [p for p in LABELS if not (stamps / p).is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} stamps missing from {stamps}: {missing[:5]}")
    paths = sorted(LABELS)
    order = np.random.default_rng(0).permutation(len(paths))
    out.mkdir(parents=True, exist_ok=True)
    sizes, lines = [], ["filename,label"]
    for rank, k in enumerate(order):
        path = paths[k]
        with Image.open(stamps / path) as im:
            rgba = np.asarray(im.convert("RGBA"))
        sizes.append(max(rgba.shape[:2]))
        name = f"{rank:03d}_{path[:-4].replace('/', '__')}.png"
        Image.fromarray(square_on_white(rgba)).save(out / name)
        lines.append(f"{name},{wnids[LABELS[path][0]]}")
    (out / "labels.csv").write_text("\n".join(lines) + "\n")
    return {"images": len(paths), "classes": len({i for i, _ in LABELS.values()}),
            "longer_side_px": {"min": int(min(sizes)), "median": float(np.median(sizes)),
                               "max": int(max(sizes))}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True, help="the folder to write")
    parser.add_argument("--deb", type=pathlib.Path, help=f"a downloaded {PACKAGE} .deb "
                        "(default: apt-get download it)")
    parser.add_argument("--stamps", type=pathlib.Path,
                        help=f"an extracted stamps folder (/{STAMPS} where the package is "
                             "installed)")
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        print(f"{args.out} exists and is not empty; remove it first", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        if args.stamps is not None:
            stamps = args.stamps
        else:
            stamps = _extract(args.deb if args.deb is not None else _download(tmp), tmp / "x")
        summary = write_folder(stamps, args.out)
    print(f"wrote {summary['images']} images of {summary['classes']} ImageNet classes to "
          f"{args.out} (longer side {summary['longer_side_px']} px)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    sys.exit(main())
