//! Lists for the one-shot commands (`audit`, `diagnose`): every object, a page at a time,
//! so a large cluster's Pods never come in one response.

use kube::Api;
use kube::api::ListParams;

/// Objects per list request.
const LIST_PAGE: u32 = 500;

/// Every object `params` selects, following `continue` tokens; the first failed page's error.
pub(crate) async fn list_all<K>(api: &Api<K>, params: ListParams) -> Result<Vec<K>, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    let mut params = params.limit(LIST_PAGE);
    loop {
        let page = api.list(&params).await?;
        items.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(items),
        }
    }
}
