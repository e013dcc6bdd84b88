//! Campaign results inside `zcdp up`: a cart reminder sent through the Zalo simulator, then the
//! user's order, is credited to the campaign; a cart nobody could be messaged about (no consent)
//! and then ordered counts as recovered too. `GET /v1/campaigns` and `/metrics` say so.

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_then_an_order_is_a_conversion_and_carts_are_recovered() {
    support::campaign_flow::campaign_flow(&[]).await;
}
