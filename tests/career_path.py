"""One whole career conversation, typed and tapped (the leaver path, ending at the summary),
for tests that need a user who finished the advice: ("tap", label) or ("say", text)."""

from __future__ import annotations

from typing import Final

TURNS: Final = [
    ("say", "営業事務で3年目です"),
    ("tap", "成果が見えにくい"),
    ("say", "毎日おなじことばっかでつまんない"),
    ("tap", "これで全部"),
    ("say", "めっちゃ当てはまる"),
    ("tap", "当てはまらない"),
    ("tap", "当てはまる"),
    ("say", "ちがうかな"),
    ("tap", "当てはまる"),
    ("tap", "当てはまらない"),
    ("tap", "当てはまる"),
    ("tap", "当てはまらない"),
    ("say", "もう辞めたい"),
    ("tap", "今の職場の工夫も見る"),
    ("tap", "試せそう"),
    ("tap", "秘書検定"),
    ("tap", "まだモヤモヤする"),
    ("tap", "思い出せる"),
    ("tap", "まずはまとめを見る"),
]
