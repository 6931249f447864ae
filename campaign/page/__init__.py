"""The live campaign page (bokeh): served in Dask's dashboard during a launch, or on its own by
``campaign dashboard STORE`` for any store."""
