"""Where the suite's time went, read from pytest's JUnit XML: seconds per pytest process (they
finish together when the heavy files are spread), per test file and the slowest tests.
``--write FILE`` also keeps the seconds per file, which the suite orders its files by."""

import argparse
import json
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path

SLOWEST = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("junit", type=Path)
    parser.add_argument("--write", type=Path, help="keep the seconds per file here (JSON)")
    arguments = parser.parse_args()
    per_test, per_file, per_process = [], defaultdict(float), defaultdict(float)
    for case in ElementTree.parse(arguments.junit).getroot().iter("testcase"):
        seconds, classname = float(case.get("time", 0)), case.get("classname", "")
        module = classname.rsplit(".", 1)[0] if classname.count(".") > 1 else classname
        per_test.append((seconds, classname, case.get("name", "")))
        per_file[module.rsplit(".", 1)[-1] + ".py"] += seconds
        process = case.find("properties/property[@name='process']")
        per_process[process.get("value", "?") if process is not None else "?"] += seconds
    print(f"\n{len(per_test)} tests, {sum(per_file.values()):.0f} s in all")
    print(
        "seconds per process: " + ", ".join(f"{n} {s:.0f}" for n, s in sorted(per_process.items()))
    )
    print("seconds per file:")
    for name, seconds in sorted(per_file.items(), key=lambda item: -item[1]):
        print(f"{seconds:8.1f}  {name}")
    print(f"the {SLOWEST} slowest tests:")
    for seconds, classname, name in sorted(per_test, reverse=True)[:SLOWEST]:
        print(f"{seconds:8.1f}  {classname}::{name}")
    if arguments.write:
        ordered = dict(sorted(per_file.items(), key=lambda item: -item[1]))
        arguments.write.write_text(
            json.dumps({k: round(v, 1) for k, v in ordered.items()}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
