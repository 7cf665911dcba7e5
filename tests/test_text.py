"""text.py: counts with their noun in the right number, numbers rounded for reading."""

from ca2st.text import plural, readable, readable_items


def test_plural_and_readable():
    assert [plural(n, "window") for n in (0, 1, 2)] == ["0 windows", "1 window", "2 windows"]
    assert plural(1, "class", "classes") == "1 class" and plural(3, "class", "classes") == "3 classes"
    assert readable(0.6000000238418579) == "0.6" and readable(2) == "2" and readable(1e-7) == "1e-07"
    assert readable_items({"top1": 0.12345678, "epoch": 3}) == "top1 0.1235, epoch 3"
