"""The synthetic fact world and a tiny model pretrained on it from scratch.

``world`` invents people, their attributes and a biography + QA corpus;
``tokenizer`` builds the word-level tokenizer that keeps massshift's prompt
contract; ``pretrain`` trains a ~1M-parameter Llama on the corpus. Import the
submodules directly (``from massshift.synthetic.world import build_world``); this
package imports nothing heavy by itself.
"""
