"""Realistic names for synthetic systems: services, operations, pods, nodes, versions."""

from __future__ import annotations

import numpy as np

GATEWAYS = ("frontend", "api-gateway", "web-gateway", "edge-proxy")

APPS = (
    "auth-service", "user-service", "cart-service", "catalog-service", "order-service",
    "payment-service", "inventory-service", "shipping-service", "pricing-service",
    "recommendation-service", "search-service", "review-service", "notification-service",
    "checkout-service", "currency-service", "ad-service", "fraud-service", "loyalty-service",
    "email-service", "tax-service", "wishlist-service", "coupon-service", "session-service",
    "profile-service", "warehouse-service", "delivery-service", "invoice-service",
    "analytics-service", "media-service", "returns-service", "quote-service", "ledger-service",
    "routing-service", "identity-service", "billing-service", "stock-service", "rating-service",
    "promotion-service", "gift-card-service", "tracking-service",
)

DATABASES = (
    "orders-db", "users-db", "catalog-db", "inventory-db", "payments-db", "reviews-db",
    "shipping-db", "billing-db", "ledger-db", "profile-db",
)

CACHES = ("session-cache", "catalog-cache", "cart-cache", "price-cache", "search-cache", "token-cache")

APP_VERBS = ("Get", "List", "Create", "Update", "Check", "Compute", "Reserve", "Validate")
HTTP_VERBS = ("GET", "GET", "GET", "POST", "PUT")

# Kubernetes pod-hash alphabet (no vowels, no look-alike digits).
POD_ALPHABET = np.array(list("bcdfghjklmnpqrstvwxz2456789"))


def noun(service: str) -> str:
    """'cart-service' -> 'cart', 'orders-db' -> 'orders'."""
    for suffix in ("-service", "-db", "-cache"):
        if service.endswith(suffix):
            return service[: -len(suffix)]
    return service


def camel(text: str) -> str:
    """'gift-card' -> 'GiftCard'."""
    return "".join(p.capitalize() for p in text.split("-"))


def pick_names(rng: np.random.Generator, pool: tuple[str, ...], k: int) -> list[str]:
    """k distinct names from a pool; beyond the pool, names get a region suffix (-eu, -us2, ...)."""
    order = [pool[i] for i in rng.permutation(len(pool))]
    out = order[:k]
    tags = ("eu", "us", "ap", "v2", "edge", "legacy")
    n = 0
    while len(out) < k:
        base, tag = order[n % len(order)], tags[(n // len(order)) % len(tags)]
        rnd = n // (len(order) * len(tags))
        out.append(f"{base}-{tag}{rnd if rnd else ''}")
        n += 1
    return out

def pod_hash(rng: np.random.Generator, length: int) -> str:
    return "".join(rng.choice(POD_ALPHABET, size=length))


def deployment_pods(rng: np.random.Generator, service: str, k: int) -> list[str]:
    """Pod names of a Deployment: <service>-<replicaset hash>-<pod hash>."""
    rs = pod_hash(rng, 10)
    return [f"{service}-{rs}-{pod_hash(rng, 5)}" for _ in range(k)]


def statefulset_pods(service: str, k: int) -> list[str]:
    return [f"{service}-{i}" for i in range(k)]


def version(rng: np.random.Generator) -> str:
    return f"{int(rng.integers(1, 4))}.{int(rng.integers(0, 20))}.{int(rng.integers(0, 10))}"


def bump_version(v: str, rng: np.random.Generator) -> str:
    major, minor, patch = (int(x) for x in v.split("."))
    if rng.random() < 0.3:
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"
