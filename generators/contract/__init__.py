"""The generator contract: the ``Generator`` base class, the domain a generator declares
(semantic and nuisance parameters, task targets), and the registry that finds installed
generators through the ``vario.generators`` entry-point group."""
