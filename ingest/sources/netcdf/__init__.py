"""The NetCDF/HDF5 source (``python -m ingest netcdf``): catalog, header reading, synth."""
