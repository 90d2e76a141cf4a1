"""Providers: processes that publish external streams (BCI, sensors) on a run's bus as ExternalSample.

* :mod:`.base`: :class:`Provider`, a Publisher on ``addresses.bus_in`` that numbers its chunks;
* :mod:`.mock_bci`: a deterministic synthetic EEG-like stream with an engagement index;
* :mod:`.lsl`: a Lab Streaming Layer bridge (``pip install 'dynamicrl[lsl]'``).
"""
