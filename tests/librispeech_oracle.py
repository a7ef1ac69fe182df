"""The LibriSpeech ExampleGen's accounting without Beam, as a test oracle."""

from typing import Dict, List, Sequence, Tuple

from components.librispeech_example_gen import layout


def scan_subsets(subset_dirs: Sequence[str]
                 ) -> Tuple[List[layout.Utterance], List[layout.Quarantined]]:
    """Scans subset directories as one split, without Beam: the oracle the
    ExampleGen's Beam pipeline is checked against.

    Returns (utterances, quarantined); duplicate ids across the subsets are
    resolved with `resolve_duplicates`. The executor does the same in Beam.
    """
    by_id: Dict[str, List[layout.Utterance]] = {}
    quarantined: List[layout.Quarantined] = []
    for subset_dir in subset_dirs:
        for entry in layout.list_subset(subset_dir):
            items = [entry] if isinstance(entry, layout.Quarantined) else layout.scan_chapter(
                entry)
            for item in items:
                if isinstance(item, layout.Utterance):
                    by_id.setdefault(item.utterance_id, []).append(item)
                else:
                    quarantined.append(item)
    utterances = []
    for uid in sorted(by_id):
        keep, dups = layout.resolve_duplicates(by_id[uid])
        utterances.append(keep)
        quarantined.extend(dups)
    return utterances, quarantined
