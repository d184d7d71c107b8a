"""Transports of the CDC pipeline: the embedded log and Kafka, both behind `cdc.ports`.

Import the adapter modules directly (`cdc.transport.kafka`, `cdc.transport.embedded`); this
package imports nothing so that choosing one never loads the other's dependencies.
"""
