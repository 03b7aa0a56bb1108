"""gpt2stream: pretrain GPT-2-class models on FineWeb-Edu streamed from the Hugging Face Hub.

Importing the package does no work: no process group, no logging setup, no network.
"""

__version__ = "0.1.0"
