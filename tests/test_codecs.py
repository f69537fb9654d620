"""Codecs (#27): every store through compression, encryption and typed models (the contract
suite and the parity machine on each codec case), and what each codec promises."""

from __future__ import annotations

import pytest

from backends.testing import ContractTests, StoreCase


class TestCodecContract(ContractTests):
    """Every test of the public contract suite, the parity machine included, on every codec case."""

    @pytest.fixture
    def store_case(self, codec_case: StoreCase) -> StoreCase:
        return codec_case

    # A codec changes values, never keys: the key rule is each store's, proven on every plain
    # case (tests/test_contract.py); here it would cost a server per key and prove nothing more.
    test_valid_keys_are_accepted = None
    test_invalid_keys_raise_invalid_key_error = None
