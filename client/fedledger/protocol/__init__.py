"""The rules every validator and re-verifier runs, with no web3 and no torch: the update-file format, the task spec, aggregation, screening, verdict files, Merkle trees and round judging."""
