"""Language-side tools for probing vision backbones: a caption language model trained from scratch, the
LiMBeR linear map into its input space, text metrics (BLEU-4, object words), MILAN neuron descriptions.

Why a room of its own rather than inside eval/: these pieces train and decode a language model, score
text and turn units into words; they take plain feature arrays and never an evaluation target, so the
protocols in eval/protocols/ (limber, neuron_descriptions) and the CLI commands both use them, and the
follow-up image-text work (captioning probes, grounding) can reuse them without going through eval/.
"""
