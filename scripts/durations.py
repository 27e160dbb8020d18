"""Where the suite's time went, read from pytest's JUnit XML: seconds per test file (the two
pytest processes finish together when the heavy files are spread) and the slowest tests."""

import sys
import xml.etree.ElementTree as ElementTree
from collections import defaultdict

SLOWEST = 20


def main(path: str) -> None:
    cases = ElementTree.parse(path).getroot().iter("testcase")
    per_test = [
        (float(case.get("time", 0)), case.get("classname", ""), case.get("name", ""))
        for case in cases
    ]
    per_file: dict[str, float] = defaultdict(float)
    for seconds, classname, _ in per_test:
        per_file[classname.rsplit(".", 1)[0] if classname.count(".") > 1 else classname] += seconds
    total = sum(per_file.values())
    print(f"\n{len(per_test)} tests, {total:.0f} s in all (summed over both processes)")
    print("seconds per file:")
    for name, seconds in sorted(per_file.items(), key=lambda item: -item[1]):
        print(f"{seconds:8.1f}  {name}")
    print(f"the {SLOWEST} slowest tests:")
    for seconds, classname, name in sorted(per_test, reverse=True)[:SLOWEST]:
        print(f"{seconds:8.1f}  {classname}::{name}")


if __name__ == "__main__":
    main(sys.argv[1])
