"""The SimPy side: thin processes for the cloud, edges and devices over the topology."""
