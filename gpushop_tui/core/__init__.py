"""The core: business rules behind the one façade every face calls, `Shopper`."""
