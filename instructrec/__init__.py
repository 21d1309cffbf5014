"""instructrec-stream: streaming InstructRec recommendations on Kafka.

This package holds the cross-cutting pieces (settings, logging, errors, the embedded
broker, Kafka client plumbing, the replay tool and the CLI). The system itself lives in
the top-level packages ``schemas`` (wire contract), ``streams`` (Faust stream worker),
``workers`` (scoring pools) and ``model`` (instructions, recall, scorer).
"""

__version__ = "0.1.0"
